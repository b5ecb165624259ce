"""RM ensembles (15): objectives, the BoN curves, the Gaussian-policy PPO pieces, claim logic, runs."""

import math
from types import SimpleNamespace

import pytest
import torch

from labkit.core import torch_threads
from labkit.methods import rm_ensembles as rme
from labkit.substrates.rlhf import best_of_n_kl

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


# --- objectives and best-of-n -------------------------------------------------------------------------


def test_objective_scores_by_hand():
    S = T([[1.0, 2.0], [3.0, 0.0]])  # 2 members × 2 responses; population var = [1, 1], unbiased = [2, 2]
    out = rme.objective_scores(S, lam=0.5)
    assert out["single"].tolist() == [1.0, 2.0]
    assert out["mean"].tolist() == [2.0, 1.0]
    assert out["WCO"].tolist() == [1.0, 0.0]
    assert out["UWO"].tolist() == pytest.approx([1.5, 0.5])
    assert rme.objective_scores(S, lam=0.5, unbiased=True)["UWO"].tolist() == pytest.approx([1.0, 0.0])


def test_powers_of_two_and_zscore():
    assert rme.powers_of_two(8) == [1, 2, 4, 8]
    assert rme.powers_of_two(10) == [1, 2, 4, 8, 10]
    assert rme.powers_of_two(1) == [1]
    z = rme.zscore(T([1.0, 2.0, 3.0]))
    assert z.tolist() == pytest.approx([-1.0, 0.0, 1.0])


def test_bon_curves_by_hand():
    # pool of 3: sorted by score, gold reads [3, 2, 1]; n = 2: weights 1/3 on the 2nd, 2/3 on the 3rd
    gold, score = T([3.0, 1.0, 2.0]), T([0.1, 0.3, 0.2])
    c = rme.bon_curves(gold, score, [1, 2, 3])
    assert c["gold_reward"] == pytest.approx([2.0, 2 / 3 + 2 / 3, 1.0])
    assert c["gap"][0] == pytest.approx(0.0, abs=1e-6)  # n = 1: both z-scores average to 0
    assert c["proxy_z"][-1] == pytest.approx(1.0)  # the top score, z = (0.3 − 0.2)/0.1
    assert c["gold_z"][-1] == pytest.approx(-1.0)  # its gold 1 is one std below the mean 2


# --- the Gaussian policy ------------------------------------------------------------------------------


def test_gaussian_logp_and_kl_match_torch_and_hand():
    mu, ls = T([1.0, 0.0]), T([0.0, math.log(2.0)])
    y = T([[0.5, -1.0], [2.0, 3.0]])
    ref = torch.distributions.Normal(mu, ls.exp())
    assert rme.gaussian_logp(y, mu, ls).tolist() == pytest.approx(ref.log_prob(y).sum(-1).tolist(), abs=1e-6)
    hand = 0.5 * ((1 + 1 - 1 - 0) + (4 + 0 - 1 - 2 * math.log(2.0)))
    assert rme.gaussian_kl(mu, ls).item() == pytest.approx(hand, abs=1e-6)
    kl = torch.distributions.kl_divergence(ref, torch.distributions.Normal(torch.zeros(2), torch.ones(2))).sum()
    assert rme.gaussian_kl(mu, ls).item() == pytest.approx(kl.item(), abs=1e-6)


def test_gaussian_gold_exact_and_by_monte_carlo():
    w, mu, ls = T([1.0, 0.0]), T([2.0, 0.0]), T([0.0, 0.0])
    assert rme.gaussian_gold(mu, ls, w, 0.15).item() == pytest.approx(2 - 0.15 * (4 + 2))
    y = mu + torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0))
    mc = (y @ w - 0.15 * y.pow(2).sum(-1)).mean()
    assert mc.item() == pytest.approx(1.1, abs=0.02)


def test_ppo_loss_at_the_old_policy():
    mu, ls = T([0.5, 0.0], requires_grad=True), T([0.0, 0.0], requires_grad=True)
    y, adv = T([[1.0, 0.0], [0.0, 0.0]]), T([1.0, -1.0])
    old = rme.gaussian_logp(y, mu, ls).detach()
    loss = rme.gaussian_ppo_loss(y, old, adv, mu, ls, beta_kl=0.1)
    assert loss.item() == pytest.approx(-0.0 + 0.1 * 0.5 * 0.25)  # ratio 1: −mean(A) = 0, KL = ½·0.5²
    loss.backward()
    # d/dμ −mean(A·log π) = −mean(A·(y − μ)) = −½[(0.5, 0) − (−0.5, 0)] = (−0.5, 0); plus β·μ = (0.05, 0)
    assert mu.grad.tolist() == pytest.approx([-0.45, 0.0], abs=1e-6)


def test_ppo_moves_toward_the_reward_and_not_without_one():
    w = T([1.0, 0.0])
    p = SimpleNamespace(ppo_steps=60, ppo_batch=128, ppo_epochs=4, ppo_lr=0.05, curvature=0.15)
    start = rme.gaussian_gold(torch.zeros(2), torch.zeros(2), w, 0.15).item()
    gold, _, kl = rme.train_gaussian_ppo(lambda y: y @ w - 0.15 * y.pow(2).sum(-1), w, p, 0.0, seed=0)
    assert gold > start + 0.5 and kl > 0.1  # a perfect reward model: gold rises
    gold, proxy, kl = rme.train_gaussian_ppo(lambda y: torch.zeros(len(y)), w, p, 0.0, seed=0)
    assert gold == pytest.approx(start) and kl == pytest.approx(0.0) and proxy == 0.0  # zero advantages


# --- data and reward models ---------------------------------------------------------------------------


def test_toy_data_follows_the_card():
    d = rme.make_toy(3, n_pairs=400, dim=4, pool_size=500, curvature=0.15)
    assert d.w.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert d.gold_pool.tolist() == pytest.approx((d.pool @ d.w - 0.15 * d.pool.pow(2).sum(-1)).tolist(), abs=1e-5)
    gold = lambda y: y @ d.w - 0.15 * y.pow(2).sum(-1)  # noqa: E731
    agree = (gold(d.chosen) > gold(d.rejected)).float().mean().item()
    assert 0.6 < agree < 0.95  # Bradley–Terry labels: mostly, not always, the gold order
    for name, (a, b) in d.tests.items():
        assert bool((gold(a) >= gold(b)).all()), name  # test pairs are ordered by r* itself
    assert d.tests["tail"][0].norm(dim=-1).mean() > 1.7 * d.tests["typical"][0].norm(dim=-1).mean()
    again = rme.make_toy(3, n_pairs=400, dim=4, pool_size=500, curvature=0.15)
    assert torch.equal(again.chosen, d.chosen) and torch.equal(again.pool, d.pool)


def test_members_differ_by_seed_and_noise_flips_pairs():
    d = rme.make_toy(0, n_pairs=200, dim=3, pool_size=300, curvature=0.15)
    p = SimpleNamespace(dim=3, rm_hidden=8, n_members=3, rm_steps=20, rm_lr=3e-3)
    ens = rme.train_members(p, d, 0.25, seed=0)
    S = ens.member_scores(d.pool)
    assert S.shape == (3, 300) and not torch.allclose(S[0], S[1])
    assert ens.mean.shape == (3,)  # standardised over the pool
    acc = rme.member_accuracy(ens, d.tests)
    assert set(acc) == {"typical", "tail"} and len(acc["tail"]) == 3


# --- claims -------------------------------------------------------------------------------------------


def test_overoptimisation_claim_both_ways():
    assert rme.overoptimisation_claim([[0.0, 1.0, 0.75]], 4).passed  # drop 0.25
    assert not rme.overoptimisation_claim([[0.0, 1.0, 0.875]], 4).passed  # drop 0.125
    check = rme.overoptimisation_claim([[0.0, 1.0, 0.5], [0.0, 1.0, 1.0]], 4)  # one seed does not drop
    assert not check.passed and check.numbers["min_drop"] == 0.0


def test_ensemble_claim_both_ways_and_margins():
    single = [[0.0, 1.0]]
    assert rme.ensemble_claim(single, [[0.0, 1.25]], [[0.0, 1.3]], 2).passed  # one seed: margin 0.25
    assert not rme.ensemble_claim(single, [[0.0, 1.25]], [[0.0, 1.2]], 2).passed  # UWO short
    three = [[0.0, 1.0]] * 3
    check = rme.ensemble_claim(three, [[0.0, 1.3]] * 3, [[0.0, 1.5]] * 3, 2)  # several seeds: margin 0.4
    assert not check.passed and check.numbers["wco_minus_single"] == pytest.approx(0.3)
    assert rme.ensemble_claim(three, [[0, 1.25], [0, 1.5], [0, 1.75]], [[0, 1.5]] * 3, 2).passed  # mean 0.5


def test_reported_claims():
    c = rme.mean_between_claim([[0, 1.0]], [[0, 1.1]], [[0, 1.3]], [[0, 1.2]], 2)
    assert c.passed and not c.asserted
    assert not rme.mean_between_claim([[0, 1.0]], [[0, 0.9]], [[0, 1.3]], [[0, 1.2]], 2).passed
    final = {
        ("single", 0.0): [1.0],
        ("WCO", 0.0): [2.0],
        ("UWO", 0.0): [1.0],
        ("single", 0.01): [1.0],
        ("WCO", 0.01): [2.0],
        ("UWO", 0.01): [0.5],
    }
    c = rme.ppo_claim(final)
    assert not c.passed and c.numbers["uwo_minus_single_beta0.01"] == pytest.approx(-0.5)


# --- runs ---------------------------------------------------------------------------------------------


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="pool_size"):
        rme.run(max_n=64, pool_size=32, progress=False)
    with pytest.raises(ValueError, match="noise"):
        rme.run(noise=0.9)


def test_small_run_with_ppo():
    r = rme.run(
        progress=False,
        n_pairs=200,
        pool_size=600,
        max_n=64,
        rm_steps=30,
        n_members=3,
        ppo=True,
        ppo_steps=4,
        ppo_batch=32,
    )
    hist = r.history
    assert {"single", "mean", "WCO", "UWO", "single · 0% noise"} <= set(hist["series"])
    kl = hist[(hist["series"] == "WCO") & (hist["metric"] == "kl_bon")].set_index("step")["value"]
    assert kl[64] == pytest.approx(best_of_n_kl(64))
    g = hist[(hist["series"] == "single") & (hist["metric"] == "gold_reward")]
    assert g.set_index("step")["value"][64] == pytest.approx(r.metrics["gold_single"])
    assert r.claims[1].numbers["gold_wco"] == pytest.approx(r.metrics["gold_wco"])
    assert len(r.claims) == 5 and not r.claims[-1].asserted
    assert {"ppo_gold_vs_kl", "ppo_proxy_vs_kl", "gold_vs_kl", "gap", "rm_accuracy"} <= set(r.figures)
    ppo = hist[hist["metric"] == "ppo_gold"]
    assert set(ppo["step"]) == {0, 4} and ppo["series"].nunique() == 8


@pytest.mark.slow
def test_quick_run():
    r = rme.run(preset="quick", progress=False)
    table = r.extras["gold_table"]
    start = [table[s][0][0] for s in ("single", "mean", "WCO", "UWO")]
    assert max(start) - min(start) < 1e-9  # n = 1 is the SFT policy, whatever the objective
    drop = r.claims[0].numbers["drop_seed0"]
    assert drop == pytest.approx(max(table["single"][0]) - table["single"][0][-1])
    assert r.claims[1].numbers["wco_minus_single"] == pytest.approx(r.metrics["gold_wco"] - r.metrics["gold_single"])
    assert 0.6 < r.metrics["rm_acc_typical"] < 1.0
    assert r.metrics["gold_wco"] > r.metrics["gold_single"]  # at the quick preset WCO ends above the single RM

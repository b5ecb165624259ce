"""RM ensembles (15): objectives, the BoN curves, the Gaussian-policy PPO pieces, claim logic, runs."""

import math

import numpy as np
import pytest
import torch

from labkit.core import Result, Verdict, torch_threads
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
    assert out["wco"].tolist() == [1.0, 0.0]
    assert out["uwo"].tolist() == pytest.approx([1.5, 0.5])
    assert rme.objective_scores(S, lam=0.5, unbiased=True)["uwo"].tolist() == pytest.approx([1.0, 0.0])


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
    assert c.gold_reward == pytest.approx([2.0, 2 / 3 + 2 / 3, 1.0])
    assert c.gap[0] == pytest.approx(0.0, abs=1e-6)  # n = 1: both z-scores average to 0
    assert c.proxy_z[-1] == pytest.approx(1.0)  # the top score, z = (0.3 − 0.2)/0.1
    assert c.gold_z[-1] == pytest.approx(-1.0)  # its gold 1 is one std below the mean 2
    assert [name for name, _ in c.items()] == ["gold_reward", "proxy_z", "gold_z", "gap"]


def test_evaluate_best_of_n_averages_the_single_members():
    d = rme.make_toy(0, n_pairs=100, dim=3, pool_size=200, curvature=0.15)
    ens = rme.train_members(d, noise=0.25, seed=0, dim=3, hidden=8, n_members=3, steps=10, lr=3e-3)
    out = rme.evaluate_best_of_n(ens, d.pool, d.gold_pool, [1, 4, 16], lam=0.5)
    assert set(out) == {"single", "mean", "wco", "uwo", "single_mean_of_k"}
    each = [rme.bon_curves(d.gold_pool, ens.member_scores(d.pool)[i], [1, 4, 16]).gold_reward for i in range(3)]
    assert out["single_mean_of_k"].gold_reward == pytest.approx(np.mean(each, 0))  # standardising keeps the order
    assert out["single"].gold_reward == pytest.approx(each[0])


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
    p = {"steps": 60, "batch": 128, "epochs": 4, "lr": 0.05, "curvature": 0.15, "beta_kl": 0.0, "seed": 0}
    start = rme.gaussian_gold(torch.zeros(2), torch.zeros(2), w, 0.15).item()
    gold, _, kl = rme.train_gaussian_ppo(lambda y: y @ w - 0.15 * y.pow(2).sum(-1), w, **p)
    assert gold > start + 0.5 and kl > 0.1  # a perfect reward model: gold rises
    gold, proxy, kl = rme.train_gaussian_ppo(lambda y: torch.zeros(len(y)), w, **p)
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
    ens = rme.train_members(d, noise=0.25, seed=0, dim=3, hidden=8, n_members=3, steps=20, lr=3e-3)
    S = ens.member_scores(d.pool)
    assert S.shape == (3, 300) and not torch.allclose(S[0], S[1])
    assert ens.mean.shape == (3,)  # standardised over the pool
    acc = rme.member_accuracy(ens, d.tests)
    assert set(acc) == {"typical", "tail"} and len(acc["tail"]) == 3


# --- claims: each holds, does not hold and is inconclusive on hand-made per-seed numbers --------------


def _curves(*finals):
    """Gold curves (seeds, 2) that start at 0 and end at the given per-seed values."""
    return [[0.0, f] for f in finals]


def test_ensemble_claim_three_ways():
    single = _curves(1.0, 1.0, 1.0)
    c = rme.ensemble_claim(single, _curves(1.3, 1.4, 1.35), _curves(1.2, 1.25, 1.3), 2)
    assert c.verdict is Verdict.HOLDS and c.headline and c.values == pytest.approx((0.2, 0.25, 0.3))  # the smaller gain
    assert c.numbers["WCO − single"] == pytest.approx(0.35)
    down = rme.ensemble_claim(single, _curves(1.3, 1.4, 1.35), _curves(0.8, 0.85, 0.9), 2)
    assert down.verdict is Verdict.DOES_NOT_HOLD  # UWO below the single RM
    assert rme.ensemble_claim(single, _curves(1.5, 0.7, 1.2), _curves(1.5, 0.7, 1.2), 2).verdict is Verdict.INCONCLUSIVE
    clean = rme.ensemble_claim(single, _curves(1.3, 1.4, 1.35), _curves(1.2, 1.25, 1.3), 2, clean=True)
    assert not clean.headline and clean.claim.startswith("without label noise")
    # the boundary that once failed on floating point: 0.7 − 0.3 ≥ 0.4 holds with the claim's tolerance
    assert rme.ensemble_claim(_curves(0.3), _curves(0.7), _curves(0.7), 2, margin=0.4).verdict is Verdict.HOLDS
    nan = rme.ensemble_claim(single, _curves(1.3, float("nan"), 1.35), _curves(1.2, 1.25, 1.3), 2)
    assert nan.verdict is Verdict.INCONCLUSIVE  # a diverged arm


def test_overoptimisation_claim_three_ways():
    assert rme.overoptimisation_claim([[0.0, 1.0, 0.7], [0.0, 1.0, 0.75], [0.0, 1.2, 0.9]], 4).verdict is Verdict.HOLDS
    flat = rme.overoptimisation_claim([[0.0, 1.0, 1.0], [0.0, 1.0, 0.95], [0.0, 1.0, 0.98]], 4)
    assert flat.verdict is Verdict.DOES_NOT_HOLD and flat.values == pytest.approx((0.0, 0.05, 0.02))
    mixed = rme.overoptimisation_claim([[0.0, 1.0, 0.2], [0.0, 1.0, 1.0], [0.0, 1.0, 0.9]], 4)
    assert mixed.verdict is Verdict.INCONCLUSIVE
    assert rme.overoptimisation_claim([[0.0, 1.0, 0.8]], 4).verdict is Verdict.HOLDS  # one seed: the point, at the bar


def test_mean_between_claim_three_ways():
    s, w, u = _curves(1.0, 1.0, 1.0), _curves(1.3, 1.3, 1.3), _curves(1.2, 1.2, 1.2)
    c = rme.mean_between_claim(s, _curves(1.1, 1.1, 1.15), w, u, 2)
    assert c.verdict is Verdict.HOLDS and c.values == pytest.approx((0.1, 0.1, 0.05))
    assert rme.mean_between_claim(s, _curves(0.9, 0.8, 0.85), w, u, 2).verdict is Verdict.DOES_NOT_HOLD
    assert rme.mean_between_claim(s, _curves(1.1, 0.7, 1.15), w, u, 2).verdict is Verdict.INCONCLUSIVE


def test_ppo_claim_three_ways():
    def final(wco, uwo):
        out = {}
        for beta in (0.0, 0.01):
            out[("single", beta)] = [1.0, 1.0, 1.0]
            out[("wco", beta)], out[("uwo", beta)] = wco, uwo
        return out

    c = rme.ppo_claim(final([1.2, 1.3, 1.25], [1.1, 1.2, 1.15]))
    assert c.verdict is Verdict.HOLDS and c.values == pytest.approx((0.1, 0.2, 0.15))
    assert c.numbers["UWO − single, β_KL=0.01"] == pytest.approx(0.15)
    assert rme.ppo_claim(final([1.2, 1.3, 1.25], [0.5, 0.6, 0.55])).verdict is Verdict.DOES_NOT_HOLD
    assert rme.ppo_claim(final([1.5, 0.6, 1.25], [1.5, 0.6, 1.25])).verdict is Verdict.INCONCLUSIVE


# --- runs ---------------------------------------------------------------------------------------------


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="pool_size"):
        rme.run(max_n=64, pool_size=32, progress=False)
    with pytest.raises(ValueError, match="noise"):
        rme.run(noise=0.9)


def test_knobs_keep_the_presets():
    k = rme.Knobs()
    assert (k.lam, k.noise, k.n_members, k.n_pairs, k.max_n, k.pool_size) == (0.5, 0.25, 5, 1000, 2048, 20_000)
    assert k.n_seeds >= 3


def test_small_run_with_ppo():
    r = rme.run(
        progress=False,
        n_pairs=200,
        pool_size=600,
        max_n=64,
        rm_steps=30,
        n_members=3,
        n_seeds=2,
        ppo=True,
        ppo_steps=4,
        ppo_batch=32,
    )
    assert isinstance(r, Result) and r.headline is not None and sum(c.headline for c in r.claims) == 1
    assert all(math.isfinite(v) for v in r.metrics.values())
    hist = r.history
    assert {"single", "mean", "WCO", "UWO", "single (mean of k)", "single · 0% noise"} <= set(hist["series"])
    assert set(hist["seed"]) == {0, 1}
    kl = hist[(hist["series"] == "WCO") & (hist["metric"] == "kl_bon")].groupby("step")["value"].mean()
    assert kl[64] == pytest.approx(best_of_n_kl(64))
    g = hist[(hist["series"] == "single") & (hist["metric"] == "gold_reward")].groupby("step")["value"].mean()
    assert g[64] == pytest.approx(r.metrics["gold_single"])
    head = r.claims[0]
    assert head.numbers["gold WCO"] == pytest.approx(r.metrics["gold_wco"])
    table = r.extras["gold_table"]
    gains = (
        np.minimum(np.array(table["WCO"])[:, -1], np.array(table["UWO"])[:, -1])
        - np.array(table["single (mean of k)"])[:, -1]
    )
    assert head.values == pytest.approx(tuple(gains))
    start = [table[s][0][0] for s in ("single", "mean", "WCO", "UWO")]
    assert max(start) - min(start) < 1e-9  # n = 1 is the SFT policy, whatever the objective
    assert len(r.claims) == 5 and r.claims[-1].claim.startswith("PPO")
    assert {"ppo_gold_vs_kl", "ppo_proxy_vs_kl", "gold_vs_kl", "gap", "rm_accuracy", "uwo_lambda"} <= set(r.figures)
    ppo = hist[hist["metric"] == "ppo_gold"]
    assert set(ppo["step"]) == {0, 4} and ppo["series"].nunique() == 8

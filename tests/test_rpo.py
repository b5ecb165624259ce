"""RPO (08): losses against hand computations, the bandit and its policy, the claim logic, one quick run."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit.core import Result, Verdict, torch_threads
from labkit.data import preferences as prefs
from labkit.methods import rpo

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


# --- losses ---------------------------------------------------------------------------------------------


def test_dpo_loss_matches_hand_computation():
    # margin = (−1 − (−2)) − (−3 − (−2)) = 1 − (−1) = 2, β·margin = 0.2; second pair: policy = ref → 0
    loss = rpo.dpo_loss(T([-1.0, -5.0]), T([-3.0, -7.0]), T([-2.0, -5.0]), T([-2.0, -7.0]), beta=0.1)
    assert loss.tolist() == pytest.approx([math.log(1 + math.exp(-0.2)), math.log(2.0)], abs=1e-6)


def test_rpo_loss_adds_minus_eta_beta_logp_chosen():
    # η = 1, β = 0.1, log π(y_w) = −1: the SFT term is −1·0.1·(−1) = +0.1
    loss = rpo.rpo_loss(T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]), beta=0.1, eta=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.2)) + 0.1, abs=1e-6)
    # η = 5, β = 0.5, log π(y_w) = −2 (ref −2), log π(y_l) = −2 (ref −1): margin = 0 − (−1) = 1
    loss = rpo.rpo_loss(T([-2.0]), T([-2.0]), T([-2.0]), T([-1.0]), beta=0.5, eta=5.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.5)) + 5.0, abs=1e-6)


def test_rpo_with_eta_zero_is_dpo():
    gen = torch.Generator().manual_seed(0)
    logps = [-10 * torch.rand(7, generator=gen) for _ in range(4)]
    assert torch.equal(rpo.rpo_loss(*logps, beta=0.3, eta=0.0), rpo.dpo_loss(*logps, beta=0.3))


def test_sft_term_gradient_wrt_logp_chosen_is_minus_eta_beta():
    w = T([-1.0], requires_grad=True)
    beta, eta = 0.1, 2.0
    rpo.rpo_loss(w, T([-3.0]), T([-2.0]), T([-2.0]), beta=beta, eta=eta).sum().backward()
    grad_rpo = w.grad.item()
    w.grad = None
    rpo.dpo_loss(w, T([-3.0]), T([-2.0]), T([-2.0]), beta=beta).sum().backward()
    grad_dpo = w.grad.item()
    assert grad_dpo == pytest.approx(-beta * sigmoid(-0.2), abs=1e-7)  # d/dz −log σ(z) = −σ(−z)
    assert grad_rpo - grad_dpo == pytest.approx(-eta * beta, abs=1e-7)


def test_average_variant_is_dpo_plus_alpha_token_mean_nll():
    # TRL-style: α·(−log π(y_w)/|y_w|) with log π(y_w) = −8 over 4 tokens, α = 1 → +2
    loss = rpo.rpo_average_loss(
        T([-8.0]), T([-8.0]), T([-8.0]), T([-8.0]), beta=0.1, rpo_alpha=1.0, chosen_lengths=T([4.0])
    )
    assert loss.item() == pytest.approx(math.log(2.0) + 2.0, abs=1e-6)
    # equal to the summed form when η·β = α/|y_w|
    args = (T([-6.0]), T([-9.0]), T([-5.0]), T([-7.0]))
    avg = rpo.rpo_average_loss(*args, beta=0.1, rpo_alpha=0.4, chosen_lengths=T([2.0]))
    assert avg.item() == pytest.approx(rpo.rpo_loss(*args, beta=0.1, eta=2.0).item(), abs=1e-6)


# --- the bandit and the tilted policy -------------------------------------------------------------------


def test_tilted_policy_hand_case_and_normalisation():
    features, ref_logp = T([[[0.0], [1.0]]]), torch.log(T([[0.5, 0.5]]))
    probs = prefs.tilted_log_probs(T([[math.log(3.0)]]), features, ref_logp).exp()
    assert probs.tolist()[0] == pytest.approx([0.25, 0.75], abs=1e-6)  # ∝ (1, 3)
    bandit = prefs.make_gold_bandit(50, 4, seeds=[0, 1])
    theta = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(1))
    logp = prefs.tilted_log_probs(theta, bandit.features, bandit.ref_logp)
    assert logp.shape == (3, 2, 50)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(3, 2), atol=1e-5)
    assert torch.allclose(
        prefs.tilted_log_probs(torch.zeros(2, 4), bandit.features, bandit.ref_logp), bandit.ref_logp, atol=1e-6
    )


def test_expectation_kl_and_support_by_hand():
    logp, ref = torch.log(T([0.25, 0.75])), torch.log(T([0.5, 0.5]))
    assert prefs.expectation(logp, T([2.0, 4.0])).item() == pytest.approx(0.5 + 3.0)
    assert prefs.kl_divergence(logp, ref).item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    ref = torch.log(T([0.15, 0.5, 0.05, 0.3]))
    assert prefs.support_mask(ref, 0.85).tolist() == [True, True, False, True]  # 0.5 + 0.3 < 0.85 → add 0.15
    assert prefs.support_mask(ref, 0.6).tolist() == [False, True, False, True]  # 0.5 < 0.6 → add 0.3
    assert prefs.support_mask(ref, 0.4).tolist() == [False, True, False, False]


def test_bandit_gold_reward_and_reference_follow_the_card():
    bandit = prefs.make_gold_bandit(30, 3, seeds=[2, 3], ref_width=2.0)
    phi, w = bandit.features[1].numpy().astype(float), bandit.w_star[1].numpy().astype(float)
    gold = phi @ w - 0.5 * (phi**2).sum(1)
    ref = -(phi**2).sum(1) / 2.0
    ref = ref - np.log(np.exp(ref).sum())
    assert bandit.gold[1].numpy() == pytest.approx(gold, abs=1e-5)
    assert bandit.ref_logp[1].numpy() == pytest.approx(ref, abs=1e-5)
    assert float(bandit.features.norm(dim=-1).max()) < 2 * 10  # u ≤ 2 times a Gaussian norm
    alone = prefs.make_gold_bandit(30, 3, seeds=[3], ref_width=2.0)
    assert torch.equal(alone.features[0], bandit.features[1])  # a seed's problem ignores the other seeds


def test_pairs_drop_ties_and_follow_bradley_terry():
    gold, ref_logp = T([[0.0, math.log(3.0)]]), torch.log(T([[0.5, 0.5]]))
    pairs = prefs.sample_bt_pairs(gold, ref_logp, 20_000, seeds=[0])
    assert torch.equal(pairs.mask, pairs.chosen != pairs.rejected)
    kept = pairs.chosen[pairs.mask]
    assert 0.45 * 20_000 < len(kept) < 0.55 * 20_000  # half the draws are ties
    assert (kept == 1).float().mean().item() == pytest.approx(0.75, abs=0.02)  # σ(log 3) = 3/4
    sure = prefs.sample_bt_pairs(T([[0.0, 100.0]]), ref_logp, 200, seeds=[0])
    assert bool((sure.chosen[sure.mask] == 1).all())


def test_masked_mean_ignores_dropped_pairs():
    assert prefs.masked_mean(T([1.0, 100.0, 3.0]), T([True, False, True])).item() == pytest.approx(2.0)


# --- training, claims and the run -----------------------------------------------------------------------


def test_arms_trained_together_equal_arms_trained_alone():
    bandit = prefs.make_gold_bandit(20, 3, seeds=[0, 1])
    pairs = prefs.sample_bt_pairs(bandit.gold, bandit.ref_logp, 40, seeds=[0, 1])
    support = prefs.support_mask(bandit.ref_logp)
    both, _ = rpo.train_arms(bandit, pairs, T([0.1, 0.1]), T([0.0, 1.0]), 30, 0.05, [0, 30], support)
    alone, _ = rpo.train_arms(bandit, pairs, T([0.1]), T([1.0]), 30, 0.05, [0, 30], support)
    assert both["gold_reward"][:, 1] == pytest.approx(alone["gold_reward"][:, 0], abs=1e-5)
    assert both["kl"][0].max() == pytest.approx(0.0, abs=1e-6)  # θ = 0 at step 0: π = π_ref


def test_gold_claim_three_ways():
    dpo = np.zeros(10)
    holds = rpo.gold_claim(dpo, dpo + np.linspace(0.5, 1.5, 10), eta=1.0)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == 0.0
    assert holds.values == pytest.approx(tuple(np.linspace(0.5, 1.5, 10)))
    fails = rpo.gold_claim(dpo, dpo - np.linspace(0.5, 1.5, 10), eta=1.0)
    assert fails.verdict is Verdict.DOES_NOT_HOLD
    mixed = rpo.gold_claim(dpo, np.array([5.0] * 5 + [-4.0] * 5), eta=1.0)  # mean +0.5, wide interval
    assert mixed.verdict is Verdict.INCONCLUSIVE
    diverged = rpo.gold_claim(dpo, np.array([1.0] * 9 + [float("nan")]), eta=1.0)
    assert diverged.verdict is Verdict.INCONCLUSIVE and "diverged" in diverged.detail
    one = rpo.gold_claim([0.0], [0.3], eta=1.0)
    assert one.verdict is Verdict.HOLDS and "1 seed, no interval" in str(one)


def test_likelihood_claims_three_ways():
    drop = rpo.dpo_chosen_drop_claim([-12.0, -11.0, -13.0])
    assert drop.verdict is Verdict.HOLDS and not drop.headline and not drop.higher_is_better
    assert rpo.dpo_chosen_drop_claim([2.0, 2.1, 1.9]).verdict is Verdict.DOES_NOT_HOLD
    assert rpo.dpo_chosen_drop_claim([-12.0, 11.0, -3.0]).verdict is Verdict.INCONCLUSIVE
    hold = rpo.rpo_chosen_hold_claim([0.01, 0.02, 0.015], eta=1.0)
    assert hold.verdict is Verdict.HOLDS and hold.higher_is_better
    assert rpo.rpo_chosen_hold_claim([-0.5, -0.4, -0.6], eta=1.0).verdict is Verdict.DOES_NOT_HOLD
    assert rpo.rpo_chosen_hold_claim([-0.5, 0.4, 0.01], eta=1.0).verdict is Verdict.INCONCLUSIVE


def test_log_schedule_is_dense_early():
    assert rpo.log_schedule(300, 100) == [
        0,
        5,
        10,
        15,
        20,
        25,
        30,
        35,
        40,
        45,
        50,
        55,
        60,
        65,
        70,
        75,
        80,
        85,
        90,
        95,
        100,
        200,
        300,
    ]
    assert rpo.log_schedule(7, 100) == [0, 5, 7]
    assert rpo.log_schedule(40, 20) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 40]


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="preset"):
        rpo.run(preset="huge")
    with pytest.raises(ValueError, match="eta"):
        rpo.run(eta=-1.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        rpo.run(etaa=1.0)


def test_small_run_has_a_headline_and_finite_metrics():
    result = rpo.run(n_seeds=3, n_steps=60, log_every=20, n_responses=40, n_pairs=60, sweep=False, progress=False)
    hist, m = result.history, result.metrics
    assert isinstance(result, Result) and result.headline is not None and result.claims[0].headline
    assert [c.headline for c in result.claims] == [True, False, False]
    assert all(math.isfinite(v) for v in m.values())
    assert set(hist["series"]) == {"DPO", "RPO η=1", "RPO η=5"} and set(hist["seed"]) == {0, 1, 2}
    start = hist[(hist["step"] == 0) & (hist["metric"] == "gold_reward")].groupby("series")["value"].mean()
    assert start.max() - start.min() < 1e-6  # every arm starts at π_ref
    arms = {o.arm.key: o for o in result.extras["arms"]}
    gap = np.array(arms["rpo"].gold) - np.array(arms["dpo"].gold)
    assert result.claims[0].values == pytest.approx(tuple(gap), abs=1e-12)
    assert m["gold_gap_rpo_minus_dpo"] == pytest.approx(gap.mean(), abs=1e-9)
    assert result.claims[1].values == pytest.approx(arms["dpo"].logp_chosen_change, abs=1e-12)
    assert m["logp_chosen_change_dpo"] == pytest.approx(np.mean(arms["dpo"].logp_chosen_change), abs=1e-9)
    assert {"gold_reward", "logp", "kl_vs_gold", "support_mass", "policy_mass"} <= set(result.figures)


def test_arms_are_typed_records():
    dpo, low, high = rpo.make_arms(1.0, 5.0)
    assert (dpo.key, low.key, high.key) == ("dpo", "rpo", "rpo_high")
    assert (low.label, high.label) == ("RPO η=1", "RPO η=5")
    assert rpo.make_arms(2.0, 2.0)[2].label == "RPO η=2 (eta_high)"  # labels stay distinct


def test_method_file_is_the_paper_only():
    source = (Path(rpo.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment"):
        assert banned not in source

"""AILBoost (21): the discriminator losses and their optima by hand, the ensemble weights in closed form, the weighted
buffer's sampling proportions, the exact mixture return, the claim logic, divergence, and runs."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import labkit.core.params as params_module
from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.methods import ailboost
from labkit.substrates import gridworld as gw

T = torch.tensor
F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


# --- the discriminator losses ------------------------------------------------------------------------------


def test_rkl_loss_hand_case():
    # E_E[exp(−D)] = (1 + 1/2)/2 = 0.75, E_B[D] = (1 − 1)/2 = 0, λ·mean(D²) = 0.1·(0 + ln²2 + 1 + 1)/4
    de, db = T([0.0, math.log(2.0)], dtype=F64), T([1.0, -1.0], dtype=F64)
    loss = ailboost.rkl_discriminator_loss(de, db, reg=0.1, bound=5.0)
    assert loss.item() == pytest.approx(0.75 + 0.1 * (math.log(2.0) ** 2 + 2.0) / 4, abs=1e-12)
    # leading dims are independent runs: (2, B) → (2,)
    two = ailboost.rkl_discriminator_loss(torch.stack([de, de]), torch.stack([db, -db]), reg=0.0, bound=5.0)
    assert two.tolist() == pytest.approx([0.75, 0.75], abs=1e-12)


def test_rkl_loss_clamps_inside_and_regularises_outside():
    de = T([-10.0], dtype=F64, requires_grad=True)
    db = T([7.0], dtype=F64, requires_grad=True)
    loss = ailboost.rkl_discriminator_loss(de, db, reg=0.5, bound=5.0)
    # exp(−clamp(−10)) = e^5, clamp(7) = 5, 0.5·(100 + 49)/2
    assert loss.item() == pytest.approx(math.exp(5.0) + 5.0 + 0.5 * 149.0 / 2, rel=1e-12)
    loss.backward()
    # past the clamp only the regulariser pulls back: d/dD 0.5·D²/2 = 0.5·D
    assert de.grad.item() == pytest.approx(0.5 * -10.0) and db.grad.item() == pytest.approx(0.5 * 7.0)


@pytest.mark.parametrize("loss_fn", [ailboost.rkl_discriminator_loss, ailboost.js_discriminator_loss])
def test_both_losses_are_stationary_at_the_log_ratio(loss_fn):
    """Expert pairs (x0, x1) with p_E = (1/2, 1/2), buffer pairs with p_B = (1/4, 3/4): the expected loss has zero
    gradient at D* = log(p_E/p_B) for the rkl form (−p_E e^{−D} + p_B = 0) and for the BCE (σ(D*) = p_E/(p_E + p_B))."""
    d = torch.log(T([0.5 / 0.25, 0.5 / 0.75], dtype=F64)).requires_grad_()
    expert, buffer = T([0, 1]), T([0, 1, 1, 1])
    loss_fn(d[expert], d[buffer], reg=0.0, bound=10.0).backward()
    assert d.grad.abs().max().item() < 1e-12
    # and not stationary elsewhere
    d0 = torch.zeros(2, dtype=F64, requires_grad=True)
    loss_fn(d0[expert], d0[buffer], reg=0.0, bound=10.0).backward()
    assert d0.grad.abs().max().item() > 0.05


def test_js_loss_hand_case_and_the_reward_is_the_logit():
    zero = torch.zeros(1, dtype=F64)
    assert ailboost.js_discriminator_loss(zero, zero, reg=0.0, bound=5.0).item() == pytest.approx(2 * math.log(2.0))
    # −log σ(1) − log(1 − σ(−1)) = 2·log(1 + e^{−1})
    loss = ailboost.js_discriminator_loss(T([1.0], dtype=F64), T([-1.0], dtype=F64), reg=0.0, bound=5.0)
    assert loss.item() == pytest.approx(2 * math.log1p(math.exp(-1.0)), abs=1e-12)
    # DAC's reward log σ(D) − log(1 − σ(D)) is D itself; the learner reads D, detached
    d = T([0.3, -2.0], dtype=F64, requires_grad=True)
    reward = ailboost.discriminator_reward(d)
    assert not reward.requires_grad
    assert (torch.log(torch.sigmoid(d)) - torch.log1p(-torch.sigmoid(d))).tolist() == pytest.approx(reward.tolist())


# --- the ensemble weights -----------------------------------------------------------------------------------


def test_boosting_weights_first_rounds_by_hand():
    w = ailboost.boosting_weights(torch.zeros(0, dtype=F64), 0.2)
    assert w.tolist() == [1.0]
    w = ailboost.boosting_weights(w, 0.2)
    assert w.tolist() == pytest.approx([0.8, 0.2])  # the official code's first pair (1 − η, η)
    w = ailboost.boosting_weights(w, 0.2)
    assert w.tolist() == pytest.approx([0.64, 0.16, 0.2])


@pytest.mark.parametrize("eta", [0.05, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("rounds", [1, 2, 7, 30])
def test_weights_after_k_rounds_sum_to_one_and_match_the_closed_form(eta, rounds):
    w = torch.zeros(0, dtype=F64)
    for _ in range(rounds):
        w = ailboost.boosting_weights(w, eta)
    assert len(w) == rounds and w.sum().item() == pytest.approx(1.0, abs=1e-12)
    closed = ailboost.closed_form_weights(rounds, eta)
    assert w.tolist() == pytest.approx(closed.tolist(), abs=1e-14)
    j = np.arange(2, rounds + 1)
    assert closed[1:].numpy() == pytest.approx(eta * (1 - eta) ** (rounds - j))  # η(1 − η)^{T−j}


def test_slot_size_weights_make_every_step_equally_likely():
    assert ailboost.slot_size_weights(T([10, 30, 60])).tolist() == pytest.approx([0.1, 0.3, 0.6])


# --- the weighted replay buffer -----------------------------------------------------------------------------


def test_weighted_buffer_samples_slots_by_weight_and_steps_uniformly_inside():
    buf = ailboost.ReplayBuffer()
    buf.add_slot(T([0] * 10))
    buf.add_slot(T([1] * 30 + [2] * 10))  # inside slot 2: pair 1 three times as often as pair 2
    buf.add_slot(T([3] * 5))
    buf.weights = T([0.5, 0.3, 0.2], dtype=F64)
    draws = buf.sample(200_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    expected = [0.5, 0.3 * 0.75, 0.3 * 0.25, 0.2]
    assert freq.tolist() == pytest.approx(expected, abs=0.005)
    assert buf.distribution(4).tolist() == pytest.approx(expected, abs=1e-12)


def test_uniform_buffer_is_proportional_to_slot_sizes():
    buf = ailboost.ReplayBuffer()
    buf.add_slot(T([0] * 10))
    buf.add_slot(T([1] * 40))
    buf.weights = ailboost.slot_size_weights(buf.sizes)
    freq = torch.bincount(buf.sample(100_000, torch.Generator().manual_seed(1)), minlength=2).double() / 100_000
    assert freq.tolist() == pytest.approx([0.2, 0.8], abs=0.005)


def test_buffer_refuses_to_sample_without_weights():
    buf = ailboost.ReplayBuffer()
    buf.add_slot(T([0, 1]))
    with pytest.raises(ValueError, match="weights"):
        buf.sample(3, torch.Generator())


# --- the world, the learners and the exact evaluation ---------------------------------------------------------


def test_mixture_return_is_the_weighted_sum_of_its_learners():
    mdp = gw.GridWorld.slippery_8x8()
    pis = [gw.uniform_policy(mdp), gw.expert_policy(mdp), gw.noisy_policy(gw.expert_policy(mdp), 0.5)]
    w = ailboost.closed_form_weights(3, 0.3).numpy()
    mix = gw.expected_return(mdp, gw.mixture(pis, w))
    assert mix == pytest.approx(sum(wj * gw.expected_return(mdp, p) for wj, p in zip(w, pis)), abs=1e-12)


def small_runs(mdp, seeds=(0,), n_rounds=3, lr=0.05, names=None):
    data = ailboost.demonstrations(mdp, gw.expert_policy(mdp), 1, list(seeds))
    runs = ailboost.make_runs(mdp, data, list(seeds), [ailboost.AILBOOST_ARM, ailboost.DAC_ARM])
    ailboost.adversarial_imitation(
        mdp,
        runs,
        n_rounds=n_rounds,
        eta=0.2,
        n_samples=40,
        disc_steps=10,
        batch_size=16,
        lr=lr,
        reg=1e-2,
        bound=5.0,
        temperature=0.1,
        sweeps=3,
    )
    return runs


def test_loop_records_each_round_and_evaluates_exactly():
    mdp = gw.GridWorld.slippery_8x8()
    ail, dac = small_runs(mdp)
    assert len(ail.learners) == len(ail.weights) == len(ail.discriminators) == 3
    # D = 0 before any update: the first learner is soft-Q on a zero reward (the entropy bonus alone)
    assert np.allclose(ail.learners[0], gw.soft_q_iteration(mdp, np.zeros((64, 4)), 0.1, 3).policy)
    assert np.allclose(ail.learners[0], dac.learners[0])
    assert ail.weights[-1].tolist() == pytest.approx([0.64, 0.16, 0.2])
    assert dac.weights[-1].tolist() == pytest.approx((dac.buffer.sizes / dac.buffer.sizes.sum()).tolist())
    assert all(len(slot) >= 40 for slot in ail.buffer.slots)
    expert_rho = ailboost.buffer_distribution(mdp, gw.expert_policy(mdp))
    ev = ailboost.evaluate_run(mdp, ail, expert_rho)
    for t in (1, 3):  # the fast weighted sum equals the substrate's exact return of the per-episode mixture
        exact = gw.normalised_return(mdp, gw.expected_return(mdp, ail.policy(t)), 1.0)
        assert ev.returns[t - 1] == pytest.approx(exact, abs=1e-12)
    assert ailboost.evaluate_run(mdp, dac, expert_rho).returns[-1] == pytest.approx(
        gw.normalised_return(mdp, gw.expected_return(mdp, dac.learners[-1]), 1.0), abs=1e-12
    )


def test_runs_trained_together_equal_runs_trained_alone():
    mdp = gw.GridWorld.slippery_8x8()
    together = small_runs(mdp, seeds=(0, 1))
    alone = small_runs(mdp, seeds=(1,))
    for a, b in zip(together[2:], alone):
        assert a.recipe == b.recipe
        assert np.allclose(a.discriminators[-1], b.discriminators[-1], atol=1e-12)
        assert np.allclose(a.learners[-1], b.learners[-1], atol=1e-12)


def test_a_huge_learning_rate_raises_divergence_naming_the_arm(monkeypatch):
    """Through run() itself (the front end refuses disc_lr=1e12, so only the range check is lifted): the clamp
    keeps the losses finite, the weights check stops the run at round 1 and names the arm."""
    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))
    expected = re.escape("in 'AILBoost seed 0 discriminator'")
    with pytest.raises(DivergenceError, match=rf"at step 1 {expected}"):
        ailboost.run(disc_lr=1e12, n_rounds=2, n_seeds=1, progress=False, record=False)


# --- the claims ---------------------------------------------------------------------------------------------


def test_return_claim_three_ways():
    dac = np.full(5, 0.5)
    holds = ailboost.return_claim(dac + np.linspace(0.05, 0.15, 5), dac)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == 0.0
    assert ailboost.return_claim(dac - np.linspace(0.05, 0.15, 5), dac).verdict is Verdict.DOES_NOT_HOLD
    assert ailboost.return_claim(dac + np.array([0.3, -0.3, 0.2, -0.2, 0.01]), dac).verdict is Verdict.INCONCLUSIVE
    nan = ailboost.return_claim([0.6, float("nan"), 0.7], [0.5, 0.5, 0.5])
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail


def test_matching_claim_three_ways():
    first = np.full(4, 0.8)
    holds = ailboost.matching_claim(first, np.array([0.3, 0.32, 0.28, 0.31]))  # ratio ≈ 0.38 ≤ 0.6
    assert holds.verdict is Verdict.HOLDS and not holds.higher_is_better and not holds.headline
    assert ailboost.matching_claim(first, np.array([0.7, 0.72, 0.69, 0.71])).verdict is Verdict.DOES_NOT_HOLD
    assert ailboost.matching_claim(first, np.array([0.1, 0.75, 0.2, 0.7])).verdict is Verdict.INCONCLUSIVE
    assert ailboost.matching_claim([0.8, 0.8], [0.2, float("nan")]).verdict is Verdict.INCONCLUSIVE


def test_buffer_claim_three_ways():
    dac = np.full(4, 0.4)
    assert ailboost.buffer_claim(dac + 0.01 * np.array([1, 1.2, 0.9, 1.1]), dac).verdict is Verdict.HOLDS  # +0.01
    assert ailboost.buffer_claim(dac + 0.1 * np.array([1, 1.2, 0.9, 1.1]), dac).verdict is Verdict.DOES_NOT_HOLD
    assert ailboost.buffer_claim(dac + np.array([0.2, -0.2, 0.15, -0.1]), dac).verdict is Verdict.INCONCLUSIVE
    assert ailboost.buffer_claim([float("nan")] * 3, [0.4] * 3).verdict is Verdict.INCONCLUSIVE


def test_bc_claim_three_ways():
    bc = np.full(3, 0.5)
    assert ailboost.bc_claim(bc + np.array([0.1, 0.12, 0.11]), bc).verdict is Verdict.HOLDS
    assert ailboost.bc_claim(bc - np.array([0.1, 0.12, 0.11]), bc).verdict is Verdict.DOES_NOT_HOLD
    assert ailboost.bc_claim(bc + np.array([0.4, -0.4, 0.1]), bc).verdict is Verdict.INCONCLUSIVE
    assert ailboost.bc_claim([float("inf"), 0.6, 0.7], bc).verdict is Verdict.INCONCLUSIVE


# --- knobs and runs -------------------------------------------------------------------------------------------


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="smaller than batch_size"):
        ailboost.run(n_samples=32, batch_size=64)
    with pytest.raises(ValueError, match="eta"):
        ailboost.run(eta=0.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        ailboost.run(etaa=0.2)


def test_small_run_has_a_headline_and_consistent_numbers():
    result = ailboost.run(n_rounds=4, n_seeds=3, disc_steps=10, n_samples=64, progress=False, record=False)
    assert isinstance(result, Result) and result.headline is not None
    assert [o.arm.key for o in result.extras["arms"]] == ["ailboost", "dac", "rkl_uniform", "bce_weighted", "bc"]
    assert [c.headline for c in result.claims] == [True, False, False, False]
    m, arms = result.metrics, {o.arm.key: o for o in result.extras["arms"]}
    assert all(math.isfinite(v) for v in m.values())
    gap = np.subtract(arms["ailboost"].returns, arms["dac"].returns)
    assert result.claims[0].values == pytest.approx(tuple(gap), abs=1e-12)
    assert m["return_gap_ailboost_minus_dac"] == pytest.approx(gap.mean(), abs=1e-12)
    hist = result.history
    labels = {o.arm.label for o in result.extras["arms"]}
    assert set(hist["series"]) == labels and set(hist["seed"]) == {0, 1, 2}
    first = hist[(hist["step"] == 1) & (hist["metric"] == "normalised_return") & (hist["series"] != "BC")]
    assert first["value"].max() - first["value"].min() < 1e-12  # both arms start from the same uniform learner
    assert {"return", "tv", "weights", "weights_over_rounds", "occupancy", "reward", "final_return"} <= set(
        result.figures
    )
    assert result.extras["weights_seed0"][-1].sum() == pytest.approx(1.0)


@pytest.mark.slow
def test_quick_preset_run():
    result = ailboost.run("quick", progress=False, record=False)
    m = result.metrics
    assert result.params["n_rounds"] == 30 and len(result.extras["arms"][0].returns) == 3
    assert 0.0 <= m["normalised_return_ailboost"] <= 1.2 and 0.0 <= m["normalised_return_dac"] <= 1.2
    assert m["tv_ailboost"] < m["tv_round1"]  # the ensemble moved towards the expert from the uniform start
    assert {c.verdict for c in result.claims} <= set(Verdict)


def test_method_file_is_the_paper_only():
    source = (Path(ailboost.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2404.08513" in source
    for banned in ("labkit.core", "labkit.viz", "plotly", "experiment", "figures", "widgets"):
        assert banned not in source

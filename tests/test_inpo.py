"""INPO (23): the loss by hand and against TRL's IPO, the exact OMD step as the population minimiser, the toy
game, the claim logic, one quick run."""

import math
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from labkit.core import Result, Verdict, resolve_params, torch_threads
from labkit.data import preferences as prefs
from labkit.methods import inpo
from labkit.substrates.preference import ipo_loss

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def quick_p(**overrides):
    return SimpleNamespace(**resolve_params(inpo.PARAMS, "quick", overrides))


def problem(seeds, **overrides):
    p = quick_p(**overrides)
    return inpo.make_problem(
        seeds,
        n_prompts=p.n_prompts,
        n_extra=p.n_extra,
        cycle=(p.p01, p.p12, p.p20),
        extra_lose=p.extra_lose,
        ref_extra_mass=p.ref_extra_mass,
    )


# --- the loss -------------------------------------------------------------------------------------------------


def test_inpo_loss_matches_hand_computation():
    # η = 2, τ = 0.05 → ητ = 0.1; Δθ = −1 − (−3) = 2, Δref = −2 − (−1) = −1, Δt = −1.5 − (−2) = 0.5
    # h = 2 − 0.1·(−1) − 0.9·0.5 = 1.65;  loss = (1.65 − η/2)² = 0.65² = 0.4225
    args = (T([-1.0]), T([-3.0]), T([-2.0]), T([-1.0]), T([-1.5]), T([-2.0]))
    assert inpo.inpo_logits(*args, eta=2.0, tau=0.05).item() == pytest.approx(1.65, abs=1e-6)
    assert inpo.inpo_loss(*args, eta=2.0, tau=0.05).item() == pytest.approx(0.4225, abs=1e-6)
    # τ = 0: only the previous iterate counts; h = 2 − 0.5 = 1.5, η = 1 → (1.5 − 0.5)² = 1
    assert inpo.inpo_loss(*args, eta=1.0, tau=0.0).item() == pytest.approx(1.0, abs=1e-6)


def test_original_code_parameterisation_is_the_same_loss():
    """The code: logits = Δθ − ratio·Δref − (1 − ratio)·Δlast, loss = (logits − 1/(2·eta_code))²."""
    gen = torch.Generator().manual_seed(0)
    logps = [-10 * torch.rand(9, generator=gen) for _ in range(6)]
    ratio, eta_code = 1 / 3, 0.005
    eta, tau = inpo.paper_knobs(ratio, eta_code)
    assert eta == pytest.approx(200.0) and eta * tau == pytest.approx(ratio)
    pc, pr, rc, rr, lc, lr = logps
    code = ((pc - pr) - ratio * (rc - rr) - (1 - ratio) * (lc - lr) - 1 / (2 * eta_code)) ** 2
    torch.testing.assert_close(inpo.inpo_loss(*logps, eta=eta, tau=tau), code, rtol=1e-5, atol=1e-3)


def test_special_cases_are_ipo():
    gen = torch.Generator().manual_seed(1)
    pc, pr, rc, rr, lc, lr = [-10 * torch.rand(7, generator=gen) for _ in range(6)]
    eta = 4.0
    # ητ = 1: IPO against π_ref with β = 1/η (target 1/(2β) = η/2)
    torch.testing.assert_close(inpo.inpo_loss(pc, pr, rc, rr, lc, lr, eta, 1 / eta), ipo_loss(pc, pr, rc, rr, 1 / eta))
    # τ = 0: IPO against the previous iterate
    torch.testing.assert_close(inpo.inpo_loss(pc, pr, rc, rr, lc, lr, eta, 0.0), ipo_loss(pc, pr, lc, lr, 1 / eta))


def test_inpo_equals_trl_ipo_with_the_mixed_reference():
    """INPO = IPO(β = 1/η) whose reference log-prob is ητ·log π_ref + (1−ητ)·log π_t. TRL's "ipo" divides each
    log-ratio by the completion length, so one-token completions make its sums and ours agree."""
    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer", reason="TRL is the reference; `pip install -e .[dev]`")
    n, eta, tau = 5, 2.0, 0.05
    gen = torch.Generator().manual_seed(2)
    per_token = -3 * torch.rand(2 * n, 1, generator=gen)
    ref, prev = -5 * torch.rand(2 * n, generator=gen), -5 * torch.rand(2 * n, generator=gen)
    mixed = eta * tau * ref + (1 - eta * tau) * prev
    mask = torch.tensor([[0, 1]] * (2 * n))
    inputs = {
        "input_ids": torch.ones(2 * n, 2, dtype=torch.long),
        "attention_mask": mask,
        "completion_mask": mask,
        "ref_chosen_logps": mixed[:n],
        "ref_rejected_logps": mixed[n:],
    }
    identity = lambda x: x  # noqa: E731
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device="cpu", gather=identity, gather_for_metrics=identity),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["ipo"],
        loss_weights=[1.0],
        beta=1 / eta,
        use_weighting=False,
        label_smoothing=0.0,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    zeros = torch.zeros_like(per_token)
    model = lambda **kw: SimpleNamespace(
        log_probs=per_token,
        entropy=zeros,
        mean_logits=zeros,  # noqa: E731
        is_top1=zeros.bool(),
    )
    expected = trl_dpo.DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    logps = per_token.sum(1)
    ours = inpo.inpo_loss(logps[:n], logps[n:], ref[:n], ref[n:], prev[:n], prev[n:], eta, tau).mean()
    torch.testing.assert_close(ours, expected)


# --- the exact OMD step ----------------------------------------------------------------------------------------


def test_omd_step_by_hand():
    # K = 2, P(0 ≻ 1) = 0.8, π_t = (½, ½), π_ref = (¼, ¾), η = 1, τ = ½ → win rates (0.65, 0.35)
    P = T([[0.5, 0.8], [0.2, 0.5]])
    logp = inpo.omd_step(torch.log(T([0.5, 0.5])), torch.log(T([0.25, 0.75])), P, eta=1.0, tau=0.5)
    w0, w1 = math.sqrt(0.5 * 0.25) * math.exp(0.65), math.sqrt(0.5 * 0.75) * math.exp(0.35)
    assert logp.exp().tolist() == pytest.approx([w0 / (w0 + w1), w1 / (w0 + w1)], abs=1e-6)


def population_loss(logits, prev_logp, ref_logp, P, eta, tau):
    """E_{y,y'~π_t} E_label (h − η/2)², with the pair ordered by the label, exactly (a double sum)."""
    logp = torch.log_softmax(logits, -1)
    K = logp.shape[-1]
    a, b = torch.meshgrid(torch.arange(K), torch.arange(K), indexing="ij")
    a, b = a.flatten(), b.flatten()
    weight = prev_logp.exp()[a] * prev_logp.exp()[b]
    a_wins = inpo.inpo_loss(logp[a], logp[b], ref_logp[a], ref_logp[b], prev_logp[a], prev_logp[b], eta, tau)
    b_wins = inpo.inpo_loss(logp[b], logp[a], ref_logp[b], ref_logp[a], prev_logp[b], prev_logp[a], eta, tau)
    return (weight * (P[a, b] * a_wins + P[b, a] * b_wins)).sum()


def test_exact_omd_step_minimises_the_population_loss():
    P = prefs.cyclic_preference_matrix((0.9, 0.6, 0.7), 2, 0.75, permutation=T([3, 0, 4, 2, 1]))
    prev = torch.log_softmax(T([0.3, -0.2, 1.0, 0.1, -1.0]), -1)
    ref = torch.log_softmax(T([-0.5, 0.4, 0.0, 0.9, 0.2]), -1)
    eta, tau = 2.0, 0.05
    target = inpo.omd_step(prev, ref, P, eta, tau).clone().requires_grad_(True)
    population_loss(target, prev, ref, P, eta, tau).backward()
    assert target.grad.abs().max().item() < 1e-5  # a stationary point of a convex quadratic in the logits
    off = (target.detach() + T([0.2, 0.0, 0.0, 0.0, 0.0])).requires_grad_(True)
    population_loss(off, prev, ref, P, eta, tau).backward()
    assert off.grad.abs().max().item() > 1e-2
    # and it is the minimum: any other policy scores higher
    best = population_loss(target.detach(), prev, ref, P, eta, tau)
    for k in range(5):
        other = target.detach() + 0.3 * torch.randn(5, generator=torch.Generator().manual_seed(k))
        assert population_loss(other, prev, ref, P, eta, tau) > best


def test_regularised_nash_is_the_fixed_point_and_near_nash_for_small_tau():
    P = prefs.cyclic_preference_matrix((0.9, 0.6, 0.7), 2, 0.75)
    ref = torch.log(T([0.4 / 3] * 3 + [0.3, 0.3]))
    logp, change = inpo.regularised_nash(P, ref, tau=0.05)
    fixed = torch.log_softmax(ref + prefs.win_rate_vs_policy(P, logp.exp()) / 0.05, -1)
    assert (logp - fixed).abs().max().item() < 1e-4 and change < 1e-6
    nash = prefs.nash_policy(P)
    assert nash.tolist() == pytest.approx([1 / 7, 2 / 7, 4 / 7, 0, 0], abs=1e-6)  # ∝ (A12, A20, A01) = (.1, .2, .4)
    tv = lambda q: 0.5 * (q - nash).abs().sum().item()  # noqa: E731
    small = inpo.regularised_nash(P, ref, tau=0.005)[0].exp()
    assert tv(small) < tv(logp.exp()) < tv(ref.exp())  # π*_τ → Nash as τ → 0
    assert prefs.exploitability(P, small).item() < 0.01
    with pytest.raises(ValueError, match="τ > 0"):
        inpo.regularised_nash(P, ref, tau=0.0)


def test_worst_case_win_rate_is_half_minus_exploitability():
    P = prefs.cyclic_preference_matrix((0.9, 0.6, 0.7), 2, 0.75)
    probs = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(3)), -1)
    torch.testing.assert_close(inpo.worst_case_win_rate(P, probs), 0.5 - prefs.exploitability(P, probs))
    # by hand: the pure policy y0 loses to y2 with P(0 ≻ 2) = 0.3
    assert inpo.worst_case_win_rate(P, T([1.0, 0, 0, 0, 0])).item() == pytest.approx(0.3)


# --- the toy problem, sampling and one iteration ------------------------------------------------------------


def test_problem_permutes_a_cyclic_game_per_prompt():
    P, ref, perms, nash = problem([5, 6])
    assert P.shape == (2, 4, 5, 5) and ref.shape == (2, 4, 5)
    prefs.check_preference_matrix(P)
    base = prefs.cyclic_preference_matrix((0.9, 0.6, 0.7), 2, 0.75)
    q = perms[1, 2]
    assert torch.equal(P[1, 2], base[q][:, q])
    canon_ref = inpo.canonical(ref.exp(), perms)
    assert canon_ref[0, 0].tolist() == pytest.approx([0.4 / 3] * 3 + [0.3, 0.3], abs=1e-6)  # 60% on the extras
    assert torch.allclose(canon_ref, canon_ref[0, 0].expand_as(canon_ref))
    assert nash.tolist() == pytest.approx([1 / 7, 2 / 7, 4 / 7, 0, 0], abs=1e-6)
    again = problem([6])[2]
    assert torch.equal(again[0], perms[1])  # a seed's problem ignores the other seeds


def test_sampled_pairs_follow_the_oracle_and_drop_ties():
    P = T([[[0.5, 0.8], [0.2, 0.5]]])
    probs = T([[[0.5, 0.5]], [[0.5, 0.5]]])  # two arms, one prompt
    chosen, rejected, mask = inpo.sample_pairs(probs, P, 20_000, torch.Generator().manual_seed(0))
    assert chosen.shape == (2, 1, 20_000)
    assert torch.equal(mask, chosen != rejected)
    assert 0.45 < mask.float().mean().item() < 0.55  # half the draws are ties
    assert (chosen[mask] == 0).float().mean().item() == pytest.approx(0.8, abs=0.015)


def test_arm_losses_at_the_previous_iterate():
    """At θ = θ_t: DPO's margin is 0, so every pair costs log 2; INPO's h = −ητ·(Δref − Δt)."""
    prev = torch.log_softmax(T([[[[0.0, 1.0, -1.0]]]]), -1).expand(2, 1, 1, 3)
    ref = torch.log(T([[[0.2, 0.3, 0.5]]]))
    pairs = (T([[[[0, 1]]], [[[0, 1]]]]), T([[[[2, 0]]], [[[2, 0]]]]), torch.ones(2, 1, 1, 2, dtype=torch.bool))
    losses = inpo.iteration_losses(prev, prev, ref, pairs, eta=2.0, tau=0.1, beta=0.1)
    assert losses[1].item() == pytest.approx(math.log(2.0), abs=1e-6)
    lp, lr = prev[0, 0, 0], ref[0, 0]
    hs = [-0.2 * ((lr[w] - lr[l]) - (lp[w] - lp[l])) for w, l in ((0, 2), (1, 0))]
    assert losses[0].item() == pytest.approx(np.mean([(h.item() - 1.0) ** 2 for h in hs]), abs=1e-6)


def test_one_fitted_iteration_lands_near_the_exact_omd_step():
    p = quick_p(n_prompts=2, n_pairs=4000, n_steps=100)
    P, ref, perms, _ = problem([0], n_prompts=2)
    theta = ref.unsqueeze(0).repeat(2, 1, 1, 1)
    pairs = inpo.sample_pairs(theta[:, 0].exp(), P[0], p.n_pairs, torch.Generator().manual_seed(1))
    pairs = tuple(t.unsqueeze(1) for t in pairs)
    kw = dict(eta=p.eta, tau=p.tau, beta=p.beta, n_steps=p.n_steps, lr=p.lr)
    new, losses = inpo.fit_iteration(theta, ref, pairs, **kw)
    exact = inpo.omd_step(ref, ref, P, p.eta, p.tau)
    kl = prefs.kl_divergence(exact, torch.log_softmax(new[0], -1))
    step = prefs.kl_divergence(exact, ref)  # how far the exact step moves from π_t = π_ref (≈ 0.03)
    assert step.min().item() > 0.02 and kl.max().item() < 0.05 * step.min().item()
    # DPO moved the mass towards the responses that won most against π_ref (the cycle responses)
    dpo = inpo.canonical(torch.softmax(new[1], -1), perms)
    assert dpo[0, :, :3].sum(-1).min().item() > 0.9


# --- claims, validation, the run -------------------------------------------------------------------------------


def test_exploitability_claim_three_ways():
    holds = inpo.exploitability_claim([0.03, 0.025, 0.031], [0.1, 0.1, 0.11])
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == 0.0 and not holds.higher_is_better
    assert holds.values == pytest.approx((-0.07, -0.075, -0.079))
    assert inpo.exploitability_claim([0.2, 0.25, 0.3], [0.1, 0.1, 0.1]).verdict is Verdict.DOES_NOT_HOLD
    # the committed 3-seed numbers: INPO lower in every seed, but the t-interval with 2 dof reaches above 0
    three = inpo.exploitability_claim([0.0316, 0.0259, 0.0305], [0.175, 0.1, 0.1])
    assert three.verdict is Verdict.INCONCLUSIVE
    nan = inpo.exploitability_claim([0.03, float("nan")], [0.1, 0.1])
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail


def test_near_nash_and_tracking_claims_three_ways():
    assert inpo.near_nash_claim([0.03, 0.031, 0.029]).verdict is Verdict.HOLDS
    assert inpo.near_nash_claim([0.08, 0.09, 0.085]).verdict is Verdict.DOES_NOT_HOLD
    assert inpo.near_nash_claim([0.03, 0.09, 0.06]).verdict is Verdict.INCONCLUSIVE
    assert inpo.near_nash_claim([0.05]).verdict is Verdict.HOLDS  # one seed: the point decides
    assert inpo.tracking_claim([0.003, 0.004, 0.002]).verdict is Verdict.HOLDS
    assert inpo.tracking_claim([0.03, 0.035, 0.04]).verdict is Verdict.DOES_NOT_HOLD
    assert inpo.tracking_claim([0.001, 0.035, 0.02]).verdict is Verdict.INCONCLUSIVE
    assert not inpo.tracking_claim([0.003]).headline


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="preset"):
        inpo.run(preset="huge")
    with pytest.raises(ValueError, match="ητ must be ≤ 1"):
        inpo.run(eta=10.0, tau=0.5, progress=False)
    with pytest.raises(ValueError, match="unknown parameter"):
        inpo.run(etaa=1.0)


def test_a_tiny_run_is_seeded_and_consistent():
    kw = dict(n_iters=3, n_pairs=64, n_steps=5, n_seeds=2, progress=False)
    a, b = inpo.run(seed=4, **kw), inpo.run(seed=4, **kw)
    assert a.history.equals(b.history)
    h = a.history
    assert set(h["series"]) == {"INPO", "iterative DPO", "exact OMD"} and set(h["seed"]) == {4, 5}
    start = h[(h["step"] == 0) & (h["metric"] == "exploitability")]
    assert start["value"].max() - start["value"].min() < 1e-6  # every arm starts at π_ref
    e = h[(h["step"] == 3) & (h["metric"] == "exploitability")].groupby("series")["value"].mean()
    assert a.metrics["exploitability_inpo"] == pytest.approx(e["INPO"], abs=1e-7)
    assert a.claims[0].numbers["e(iterative DPO)"] == pytest.approx(e["iterative DPO"], abs=1e-7)


def test_small_run_has_a_headline_and_finite_metrics():
    result = inpo.run(n_iters=4, n_pairs=64, n_steps=5, n_seeds=3, progress=False)
    m, h = result.metrics, result.history
    assert isinstance(result, Result) and result.headline is not None
    assert [c.headline for c in result.claims] == [True, False, False]
    assert all(math.isfinite(v) for v in m.values())
    assert set(h["seed"]) == {0, 1, 2} and h["step"].max() == 4
    assert m["worst_win_rate_inpo"] == pytest.approx(0.5 - m["exploitability_inpo"], abs=1e-6)
    arms = {o.arm.key: o for o in result.extras["arms"]}
    diff = np.array(arms["inpo"].exploitability) - np.array(arms["dpo"].exploitability)
    assert result.claims[0].values == pytest.approx(tuple(diff), abs=1e-12)
    assert {"exploitability", "win_vs_prev", "win_vs_dpo", "cycle_mass", "simplex", "omd_kl"} <= set(result.figures)


def test_method_file_is_the_paper_only():
    source = (Path(inpo.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment"):
        assert banned not in source

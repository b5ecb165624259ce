"""TempNet (17): the DRO loss against hand computations and its limits, the closed form of the inner maximisation and
the oracle τ* (against scipy), TempNet's range, the training loop, the data, the claims, divergence, a quick run."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import labkit.core.params as params_module
from labkit.core import DivergenceError, Result, Verdict, check_finite, check_weights, torch_threads
from labkit.core.store import RunStore
from labkit.data import next_token as nt
from labkit.methods import tempnet

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


def random_logits(n=6, m=10, scale=3.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, m, generator=gen, dtype=torch.float64), torch.randint(m, (n,), generator=gen)


# --- the DRO loss -------------------------------------------------------------------------------------------


def test_dro_loss_matches_hand_computation():
    # h = (0, 1, 2), y = 0: the gaps are (0, 1, 2)
    h, y = T([[0.0, 1.0, 2.0]], dtype=torch.float64), T([0])
    by_hand_1 = math.log((1 + math.e + math.e**2) / 3) + 0.5  # τ = 1, ρ = 0.5
    by_hand_2 = 2 * math.log((1 + math.exp(0.5) + math.e) / 3) + 2 * 0.5  # τ = 2
    assert tempnet.dro_loss(h, y, 1.0, 0.5).item() == pytest.approx(by_hand_1, abs=1e-12)
    assert tempnet.dro_loss(h, y, 2.0, 0.5).item() == pytest.approx(by_hand_2, abs=1e-12)
    # y = 2: the gaps are (−2, −1, 0)
    by_hand_3 = math.log((math.exp(-2) + math.exp(-1) + 1) / 3) + 0.5
    assert tempnet.dro_loss(h, T([2]), 1.0, 0.5).item() == pytest.approx(by_hand_3, abs=1e-12)


def test_dro_loss_limits_mean_for_large_tau_and_max_for_small_tau():
    h, y = random_logits()
    gaps = h - h.gather(1, y[:, None])
    # ρ = 0 isolates τ·log mean exp(gaps/τ): → mean gap as τ → ∞, → max gap as τ → 0
    assert tempnet.dro_loss(h, y, 1e6, 0.0).numpy() == pytest.approx(gaps.mean(1).numpy(), abs=1e-4)
    assert tempnet.dro_loss(h, y, 1e-3, 0.0).numpy() == pytest.approx(gaps.amax(1).numpy(), abs=1e-2)
    # and in between it lies between the two, growing with 1/τ
    mid = tempnet.dro_loss(h, y, 1.0, 0.0)
    assert bool((mid >= gaps.mean(1)).all()) and bool((mid <= gaps.amax(1) + 1e-12).all())
    assert bool((tempnet.dro_loss(h, y, 0.5, 0.0) >= mid).all())


def test_llm_form_equals_the_dual_form():
    h, y = random_logits(n=8, m=12)
    tau = torch.linspace(0.2, 4.0, 8, dtype=torch.float64)[:, None]
    dual = tempnet.dro_loss(h, y, tau, 1.3)
    assert tempnet.tempnet_loss(h, y, tau, 1.3).numpy() == pytest.approx(dual.numpy(), abs=1e-10)
    # the τ-dependent part: L_DRO = robust_objective − h_y
    robust = tempnet.robust_objective(h, tau, 1.3) - h.gather(1, y[:, None])[:, 0]
    assert robust.numpy() == pytest.approx(dual.numpy(), abs=1e-10)


def test_tau_one_is_cross_entropy_up_to_a_constant():
    h, y = random_logits(m=7)
    tau = torch.ones(len(y), 1, dtype=torch.float64)
    ce = F.cross_entropy(h, y, reduction="none")
    shifted = tempnet.tempnet_loss(h, y, tau, 0.4) - (0.4 - math.log(7))
    assert shifted.numpy() == pytest.approx(ce.numpy(), abs=1e-12)


def test_kl_to_uniform_and_weights_by_hand():
    h = T([[0.0, math.log(3.0)]], dtype=torch.float64)  # softmax = (1/4, 3/4)
    assert tempnet.dro_weights(h, 1.0)[0].tolist() == pytest.approx([0.25, 0.75])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert tempnet.kl_to_uniform(h, 1.0).item() == pytest.approx(kl, abs=1e-12)
    assert tempnet.kl_to_uniform(h, 1e6).item() == pytest.approx(0.0, abs=1e-9)  # τ → ∞: uniform


# --- the inner maximisation and the oracle τ* --------------------------------------------------------------


def test_oracle_tau_matches_scipy_and_sits_on_the_kl_ball():
    from scipy.optimize import minimize_scalar

    h, y = random_logits(n=5, m=16, scale=2.0, seed=3)
    rho = 1.0
    tau_star = tempnet.optimal_tau(h, rho, 1e-3, 100.0)
    for i in range(len(h)):
        row = h[i : i + 1]
        f = lambda t, row=row: float(tempnet.robust_objective(row, t, rho))  # noqa: E731
        ref = minimize_scalar(f, bounds=(1e-3, 100.0), method="bounded", options={"xatol": 1e-10})
        assert tau_star[i].item() == pytest.approx(ref.x, rel=1e-4)
    # at τ*: KL(softmax(h/τ*)‖u) = ρ and dL/dτ = ρ − KL = 0
    assert tempnet.kl_to_uniform(h, tau_star).numpy() == pytest.approx(np.full(5, rho), abs=1e-8)
    t = tau_star.clone().requires_grad_(True)
    tempnet.robust_objective(h, t, rho).sum().backward()
    assert t.grad.numpy() == pytest.approx(np.zeros(5), abs=1e-7)


def test_closed_form_inner_max_equals_the_dual_and_beats_feasible_distributions():
    h, y = random_logits(n=4, m=9, scale=2.0, seed=5)
    rho = 0.7
    tau_star = tempnet.optimal_tau(h, rho, 1e-3, 100.0)
    gaps = h - h.gather(1, y[:, None])
    p_star = tempnet.dro_weights(h, tau_star)
    primal = (p_star * gaps).sum(1)  # Σ_k p*_k (h_k − h_y), with KL(p*‖u) = ρ
    dual = tempnet.dro_loss(h, y, tau_star, rho)
    assert primal.numpy() == pytest.approx(dual.numpy(), abs=1e-7)  # strong duality
    # any distribution inside the KL ball does no better: random softmaxes pulled into the ball
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        q = torch.softmax(3 * torch.randn(4, 9, generator=gen, dtype=torch.float64), 1)
        u = torch.full_like(q, 1 / 9)
        for lam in torch.linspace(1.0, 0.0, 41, dtype=torch.float64):  # the largest mix λ·q + (1 − λ)·u in the ball
            mix = lam * q + (1 - lam) * u
            if bool(((mix * (mix * 9).log()).sum(1) <= rho).all()):
                break
        assert bool(((mix * gaps).sum(1) <= dual + 1e-9).all())


def test_oracle_is_clamped_to_the_range():
    peaked = T([[10.0, 0.0, 0.0, 0.0]])  # needs a large τ to reach KL = ρ
    assert tempnet.optimal_tau(peaked, 0.1, 0.5, 2.0).item() == pytest.approx(2.0, rel=1e-6)
    flat = T([[0.01, 0.0, 0.0, 0.0]])  # KL < ρ even at small τ: the smallest τ wins
    assert tempnet.optimal_tau(flat, 1.0, 0.5, 2.0).item() == pytest.approx(0.5, rel=1e-6)


def test_peaked_logits_get_a_larger_optimal_tau():
    peaked, flat = T([[6.0] + [0.0] * 15]), T([[2.0] * 8 + [0.0] * 8])
    both = torch.cat([peaked, flat])
    tau = tempnet.optimal_tau(both, 1.5, 0.01, 50.0)
    assert tau[0] > tau[1]


# --- TempNet and the single temperatures --------------------------------------------------------------------


def test_tempnet_stays_in_its_range_and_ignores_the_logits_scale():
    torch.manual_seed(0)
    net = tempnet.TempNet(20, hidden=8, tau_min=0.05, tau_max=5.0, dropout=0.1).eval()
    h = 5 * torch.randn(64, 20)
    tau = net(h)
    assert tau.shape == (64, 1) and bool(((tau >= 0.05) & (tau <= 5.0)).all())
    assert net(100 * h).detach().numpy() == pytest.approx(tau.detach().numpy(), abs=1e-5)  # x = h/‖h‖₂
    # the code's init: head weights 1, bias 0, scale e^0; at init τ sits near the middle of the range
    assert net.head.weight.detach().eq(1.0).all() and net.head.bias.item() == 0.0 and net.log_scale.item() == 0.0
    assert abs(float(tau.detach().mean()) - 2.525) < 0.5
    with torch.no_grad():  # blown-up weights saturate the sigmoid at the bounds, never past them
        for param in net.parameters():
            param.mul_(1e4)
    tau = net(h)
    assert bool(((tau >= 0.05) & (tau <= 5.0)).all()) and bool(torch.isfinite(tau).all())
    with pytest.raises(ValueError, match="tau_min"):
        tempnet.TempNet(20, tau_min=1.0, tau_max=0.5)


def test_global_and_fixed_temperatures():
    h = torch.randn(5, 4)
    glob = tempnet.GlobalTemperature(0.5, 4.5)
    assert glob(h).shape == (5, 1) and glob(h)[:, 0].tolist() == pytest.approx([2.5] * 5)
    assert tempnet.FixedTemperature(1.0)(h)[:, 0].tolist() == [1.0] * 5
    assert list(tempnet.FixedTemperature(1.0).parameters()) == []


# --- the training loop ---------------------------------------------------------------------------------------


def tiny_lm(seed=0, m=8):
    torch.manual_seed(seed)
    return tempnet.NextTokenMLP(m, width=8)


def tiny_data(m=8, n=256, seed=0):
    world = nt.make_next_token_world(m, group_size=4)
    gen = torch.Generator().manual_seed(seed)
    rows, tokens = nt.sample_next_tokens(world.probs, n, gen)
    return world.contexts[rows], tokens


def test_fixed_tau_one_in_the_loop_is_plain_cross_entropy_training():
    contexts, labels = tiny_data()
    lm = tiny_lm()
    tempnet.train_tempnet(
        lm,
        tempnet.FixedTemperature(1.0),
        contexts,
        labels,
        rho=1.0,
        n_steps=5,
        batch_size=16,
        tempnet_lr=0.0,
        lm_lr=0.01,
        generator=torch.Generator().manual_seed(1),
    )
    ref = tiny_lm()
    opt, gen = torch.optim.Adam(ref.parameters(), lr=0.01), torch.Generator().manual_seed(1)
    for _ in range(5):
        idx = torch.randint(len(labels), (16,), generator=gen)
        loss = F.cross_entropy(ref(contexts[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for a, b in zip(lm.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_plug_in_training_leaves_the_model_frozen_and_moves_tempnet():
    contexts, labels = tiny_data()
    lm, net = tiny_lm(), tempnet.TempNet(8, hidden=4, tau_min=0.1, tau_max=3.0, dropout=0.0)
    lm_before = [p.detach().clone() for p in lm.parameters()]
    net_before = [p.detach().clone() for p in net.parameters()]
    logged, losses = [], []
    tempnet.train_tempnet(
        lm,
        net,
        contexts,
        labels,
        rho=1.0,
        n_steps=20,
        batch_size=32,
        tempnet_lr=0.05,
        generator=torch.Generator().manual_seed(0),
        log_steps=[0, 10, 20],
        on_step=lambda s, loss: losses.append(s),
        on_log=lambda s: logged.append((s, net.training)),
    )
    assert all(torch.equal(a, b) for a, b in zip(lm.parameters(), lm_before))
    assert any(not torch.equal(a, b) for a, b in zip(net.parameters(), net_before))
    assert logged == [(0, False), (10, False), (20, False)] and losses == list(range(1, 21))


def test_a_huge_learning_rate_in_the_loop_raises_naming_the_arm():
    contexts, labels = tiny_data()
    net = tempnet.TempNet(8, hidden=4)
    with pytest.raises(DivergenceError, match=r"at step \d+ in 'TempNet'"):
        tempnet.train_tempnet(
            tiny_lm(),
            net,
            contexts,
            labels,
            rho=1.0,
            n_steps=30,
            batch_size=16,
            tempnet_lr=1e12,
            generator=torch.Generator().manual_seed(0),
            log_steps=range(31),
            on_step=lambda s, loss: check_finite(loss, s, "TempNet"),
            on_log=lambda s: check_weights(net, s, "TempNet"),
        )


# --- the data and the measurements --------------------------------------------------------------------------


def test_world_follows_the_card():
    world = nt.make_next_token_world(64, group_size=16, p_copy=0.9)
    assert world.n_contexts == 4096 and torch.allclose(world.probs.sum(1), torch.ones(4096))
    row = 3 * 64 + 40  # (a, b) = (3, 40): factual, copy b
    assert world.factual[row] and world.probs[row, 40].item() == pytest.approx(0.9 + 0.1 / 64)
    assert world.probs[row, 0].item() == pytest.approx(0.1 / 64)
    row = 40 * 64 + 20  # (40, 20): creative, uniform over the group 16…31
    assert not world.factual[row]
    assert world.probs[row, 16:32].tolist() == pytest.approx([1 / 16] * 16) and world.probs[row, :16].sum() == 0
    assert world.entropy()[row].item() == pytest.approx(math.log(16), abs=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        nt.make_next_token_world(60, group_size=16)


def test_split_and_sampling():
    train, test = nt.split_contexts(100, 0.5, seed=3)
    assert len(train) == len(test) == 50 and set(train.tolist()).isdisjoint(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(100))
    assert torch.equal(nt.split_contexts(100, 0.5, seed=3)[0], train)
    probs = T([[0.2, 0.8, 0.0], [0.0, 0.0, 1.0]])
    rows, tokens = nt.sample_next_tokens(probs, 20_000, torch.Generator().manual_seed(0))
    first = tokens[rows == 0]
    assert (first == 1).float().mean().item() == pytest.approx(0.8, abs=0.02)
    assert bool((first != 2).all()) and bool((tokens[rows == 1] == 2).all())


def test_expected_dro_loss_is_the_label_average():
    h, _ = random_logits(n=3, m=5)
    probs = torch.softmax(torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 1)
    tau = T([0.5, 1.0, 2.0], dtype=torch.float64)
    by_label = torch.stack([tempnet.dro_loss(h, torch.full((3,), k), tau, 0.8) for k in range(5)], 1)
    expected = (probs * by_label).sum(1)
    assert tempnet.expected_dro_loss(h, probs, tau, 0.8).numpy() == pytest.approx(expected.numpy(), abs=1e-10)


def test_excess_nll_is_a_kl():
    probs = T([[0.25, 0.75]], dtype=torch.float64)
    assert tempnet.excess_nll(probs.log(), probs, 1.0).item() == pytest.approx(0.0, abs=1e-12)
    q = torch.softmax(probs.log() / 2.0, 1)
    kl = (probs * (probs.log() - q.log())).sum().item()
    assert tempnet.excess_nll(probs.log(), probs, 2.0).item() == pytest.approx(kl, abs=1e-12) and kl > 0


def test_best_single_tau_is_the_grid_minimiser():
    h, _ = random_logits(n=20, m=8)
    probs = torch.full((20, 8), 1 / 8, dtype=torch.float64)
    grid = tempnet.tau_grid(0.05, 5.0)
    assert len(grid) == 60 and grid[0].item() == pytest.approx(0.05) and grid[-1].item() == pytest.approx(5.0)
    best, losses = tempnet.best_single_tau(h, probs, grid, 1.0)
    assert best == pytest.approx(float(grid[int(np.argmin(losses))])) and min(losses) <= losses[0]


# --- the claims -----------------------------------------------------------------------------------------------


def test_gap_closure_claim_three_ways():
    grid, oracle = np.full(5, 1.0), np.zeros(5)
    holds = tempnet.gap_closure_claim(grid, np.full(5, 0.1) + np.linspace(0, 0.05, 5), oracle)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == 0.6
    assert holds.values[0] == pytest.approx(0.9)
    fails = tempnet.gap_closure_claim(grid, np.full(5, 0.8) + np.linspace(0, 0.05, 5), oracle)
    assert fails.verdict is Verdict.DOES_NOT_HOLD
    nan = tempnet.gap_closure_claim(grid, [0.1, 0.1, float("nan"), 0.1, 0.1], oracle)
    assert nan.verdict is Verdict.INCONCLUSIVE and "inconclusive" in nan.detail
    no_gap = tempnet.gap_closure_claim(grid, grid, grid)  # the oracle equals the single τ: nothing to close
    assert no_gap.verdict is Verdict.INCONCLUSIVE


def test_tracking_and_direction_claims_three_ways():
    assert tempnet.tracking_claim([0.85, 0.8, 0.82]).verdict is Verdict.HOLDS
    assert tempnet.tracking_claim([0.3, 0.35, 0.32]).verdict is Verdict.DOES_NOT_HOLD
    assert tempnet.tracking_claim([0.8, float("nan"), 0.8]).verdict is Verdict.INCONCLUSIVE
    direction = tempnet.factual_creative_claim([1.4, 1.5, 1.45], [0.4, 0.38, 0.41])
    assert direction.verdict is Verdict.HOLDS and not direction.headline
    assert tempnet.factual_creative_claim([0.4, 0.38, 0.41], [1.4, 1.5, 1.45]).verdict is Verdict.DOES_NOT_HOLD
    assert tempnet.factual_creative_claim([1.4, float("nan"), 1.4], [0.4] * 3).verdict is Verdict.INCONCLUSIVE


def test_joint_claim_three_ways():
    ce = [0.06, 0.06, 0.06]
    assert tempnet.joint_claim([0.05, 0.051, 0.049], ce).verdict is Verdict.HOLDS
    assert tempnet.joint_claim([1.2, 1.1, 1.3], ce).verdict is Verdict.DOES_NOT_HOLD
    assert tempnet.joint_claim([0.05, float("nan"), 0.05], ce).verdict is Verdict.INCONCLUSIVE


# --- knobs, divergence and runs -------------------------------------------------------------------------------


def test_bad_knobs_are_refused_before_any_work():
    with pytest.raises(ValueError, match="tau_max"):
        tempnet.run(tau_min=2.0, tau_max=1.0)
    with pytest.raises(ValueError, match="log m"):
        tempnet.run(rho=3.6, vocab_size=32)  # log 32 = 3.47
    with pytest.raises(ValueError, match="joint_tau_max"):
        tempnet.run(joint_tau_min=5.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        tempnet.run(rhoo=1.0)
    with pytest.raises(ValueError, match="vocab_size"):
        tempnet.run(vocab_size=48)


SMALL = dict(n_seeds=3, n_steps=30, lm_steps=30, log_every=10, vocab_size=32, progress=False)


@pytest.fixture
def without_range_checks(monkeypatch):
    """Values are still parsed and type-checked; only the [low, high] range is lifted (as in test_divergence)."""
    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))


@pytest.mark.parametrize(
    ("overrides", "series"),
    [({"tempnet_lr": 1e12}, "TempNet seed 0"), ({"lm_lr": 1e12}, "LM + CE (τ = 1) seed 0")],
    ids=["tempnet_lr", "lm_lr"],
)
def test_a_huge_learning_rate_stops_the_run_naming_the_series(
    overrides, series, without_range_checks, tmp_path, monkeypatch
):
    monkeypatch.setenv("LABKIT_STORE", str(tmp_path / "runs.sqlite"))
    with pytest.raises(DivergenceError, match=rf"at step \d+ in {re.escape(repr(series))}"):
        tempnet.run(**{**SMALL, **overrides}, record=True)
    assert len(RunStore(tmp_path / "runs.sqlite").runs()) == 0  # nothing recorded


def test_small_run_with_sweep_and_joint():
    result = tempnet.run(**SMALL, rho_sweep=True, joint=True)
    assert [c.headline for c in result.claims] == [True, False, False, False]
    assert all(math.isfinite(v) for v in result.metrics.values())
    temps = result.extras["temperatures"]
    assert [t.seed for t in temps] == [0, 1, 2] and all(t.rho == 2.0 for t in temps)
    closure = [t.gap_closure for t in temps]
    assert result.claims[0].values == pytest.approx(tuple(closure), abs=1e-12)
    assert result.metrics["gap_closure"] == pytest.approx(np.mean(closure), abs=1e-12)
    for t in temps:  # the oracle is the best per-input τ, the grid τ is one of the singles
        assert t.loss["oracle"] <= min(t.loss["grid"], t.loss["fixed"], t.loss["tempnet"]) + 1e-6
        # KL(softmax(h/τ*)‖u) = ρ, except where τ* is clamped at the range (nearly flat logits after 30 LM steps)
        assert t.kl_oracle == pytest.approx(2.0, abs=0.05)
    assert sorted({t.rho for t in result.extras["sweep"]}) == [1.0, 2.0, 3.0]
    assert len(result.extras["joint"]) == 3
    assert result.claims[3].values == pytest.approx(
        tuple(j.nll_joint_raw - j.nll_ce for j in result.extras["joint"]), abs=1e-12
    )
    hist = result.history
    assert set(hist[hist["metric"] == "robust_loss"]["series"]) == {a.label for a in tempnet.ARMS}
    assert {"rho_sweep", "joint", "tau_hist", "dro_weights"} <= set(result.figures)


@pytest.mark.slow
def test_quick_preset_runs_with_three_seeds_and_a_headline():
    result = tempnet.run(preset="quick", progress=False)
    assert isinstance(result, Result) and result.headline is not None and result.headline.interval.n == 3
    assert [c.headline for c in result.claims] == [True, False, False]
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert result.metrics["loss_oracle"] <= result.metrics["loss_tempnet"] <= result.metrics["loss_fixed"]
    assert {"tau_hist", "tau_scatter", "robust_loss", "nll_excess", "u_curve", "dro_weights"} <= set(result.figures)
    fig = result.extras["figure_data"]
    assert len(fig.tau_tempnet) == len(fig.factual) == 2048 and len(fig.batch_weights) == 2 * tempnet.WEIGHTS_BATCH

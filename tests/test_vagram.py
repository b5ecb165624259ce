"""VaGraM (11): the pendulum against gymnasium, the losses and the value gradient by hand, the gradient conditioning,
value iteration, the claim logic, divergence, bad knobs, and one quick-preset run."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.methods import vagram
from labkit.methods.vagram import experiment as ex
from labkit.substrates import pendulum as pend

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


# --- the simulator ------------------------------------------------------------------------------------------


def test_pendulum_matches_gymnasium_step_by_step():
    gym = pytest.importorskip("gymnasium")
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=3)
    theta, theta_dot = (T([x], dtype=torch.float64) for x in env.unwrapped.state)
    assert pend.observe(theta, theta_dot)[0].numpy() == pytest.approx(obs, abs=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(150):
        u = rng.uniform(-3.0, 3.0)  # beyond ±2 too: both clip
        obs, r, *_ = env.step(np.array([u], dtype=np.float32))
        theta, theta_dot, ours = pend.step(theta, theta_dot, T([float(np.float32(u))], dtype=torch.float64))
        assert ours.item() == pytest.approx(float(r), abs=1e-5)
        assert pend.observe(theta, theta_dot)[0].numpy() == pytest.approx(obs, abs=1e-5)


def test_step_and_reward_by_hand():
    # θ = π/2, θ̇ = 1, u = 1: θ̇' = 1 + (15·1 + 3·1)·0.05 = 1.9, θ' = π/2 + 0.095; r = −(π²/4 + 0.1 + 0.001)
    th2, dot2, r = pend.step(T([math.pi / 2]), T([1.0]), T([1.0]))
    assert dot2.item() == pytest.approx(1.9, abs=1e-6)
    assert th2.item() == pytest.approx(math.pi / 2 + 0.095, abs=1e-6)
    assert r.item() == pytest.approx(-(math.pi**2 / 4 + 0.101), abs=1e-5)
    assert pend.step(T([0.0]), T([7.9]), T([2.0]))[1].item() == 8.0  # speed clipped at 8


def test_distractors_follow_their_own_dynamics():
    a = T([[0.5, -1.0], [2.0, 0.0]])
    z = T([[1.0, 2.0]])
    assert pend.distractor_step(z, a).tolist()[0] == pytest.approx([2 * math.tanh(-1.5), 2 * math.tanh(2.0)])
    assert torch.allclose(pend.distractor_step_batched(z[None], a[None])[0], pend.distractor_step(z, a))
    data = pend.sample_transitions(64, pend.distractor_matrix(5, seed=0), torch.Generator().manual_seed(0))
    assert data.s.shape == data.s2.shape == (64, 8) and data.a.shape == (64, 1) and data.r.shape == (64,)
    th, dot = pend.angle_of(data.s)
    th2, dot2, r = pend.step(th, dot, data.a[:, 0])
    assert torch.allclose(data.s2[:, :3], pend.observe(th2, dot2), atol=1e-5) and torch.allclose(data.r, r, atol=1e-5)
    assert torch.allclose(data.s2[:, 3:], pend.distractor_step(data.s[:, 3:], pend.distractor_matrix(5, seed=0)))


def test_value_iteration_is_zero_upright_and_negative_elsewhere():
    grid = pend.value_iteration(21, 5, 0.9, 60)
    i, j = 10, 10  # θ = 0, θ̇ = 0: reward 0 forever with u = 0
    assert grid.theta[i] == pytest.approx(0.0) and grid.theta_dot[j] == pytest.approx(0.0)
    assert grid.values[i, j] == pytest.approx(0.0, abs=1e-9)
    assert grid.values.max() <= 1e-9 and grid.values.min() < -10
    assert grid.values[0] == pytest.approx(grid.values[-1])  # θ = ±π is one state
    assert grid(0.0, 0.0) == pytest.approx(0.0, abs=1e-9)


# --- the losses and the value gradient ----------------------------------------------------------------------


def test_mse_and_vagram_losses_by_hand():
    pred, target = T([[1.0, 2.0], [0.0, 0.0]]), T([[0.0, 0.0], [1.0, 1.0]])
    pred_r, r = T([1.0, 0.0]), T([0.0, 0.0])
    # errors (1, 2), (−1, −1): ‖e‖² = 5, 2 → mean 3.5; reward (1² + 0)/2 = 0.5
    assert vagram.mse_loss(pred, pred_r, target, r).item() == pytest.approx(4.0)
    g = T([[2.0, 0.0], [1.0, 3.0]])
    # (2·1)² + 0 = 4;  (1·−1)² + (3·−1)² = 10 → mean 7; + 0.5
    assert vagram.vagram_loss(pred, pred_r, target, r, g).item() == pytest.approx(7.5)
    # Taylor: (gᵀe)² = (2)² = 4 and (−1 − 3)² = 16 → 10
    assert vagram.taylor_vaml_loss(pred, target, g).item() == pytest.approx(10.0)


def test_loss_identities_from_the_card():
    gen = torch.Generator().manual_seed(0)
    pred, target, g = (torch.randn(4, 50, 6, generator=gen) for _ in range(3))
    pred_r, r = torch.randn(4, 50, generator=gen), torch.randn(4, 50, generator=gen)
    # with g = 1 VaGraM is the MSE loss
    ones = torch.ones_like(g)
    assert torch.allclose(vagram.vagram_loss(pred, pred_r, target, r, ones), vagram.mse_loss(pred, pred_r, target, r))
    # VaGraM's state term bounds the Taylor loss: (gᵀe)² ≤ n·Σ_j g_j² e_j²
    state = vagram.vagram_loss(pred, r, target, r, g)
    assert bool((state * 6 >= vagram.taylor_vaml_loss(pred, target, g) - 1e-5).all())
    # an error orthogonal to g costs the Taylor loss nothing, but not VaGraM
    g1, e = T([[[1.0, 1.0]]]), T([[[1.0, -1.0]]])
    assert vagram.taylor_vaml_loss(e, torch.zeros_like(e), g1).item() == pytest.approx(0.0)
    assert vagram.vagram_loss(e, T([[0.0]]), torch.zeros_like(e), T([[0.0]]), g1).item() == pytest.approx(2.0)


def test_value_gradient_of_a_known_value():
    def value(s):  # V(s) = s₀² + 3·s₁, independent of s₂
        return s[..., 0] ** 2 + 3 * s[..., 1]

    s2 = T([[1.0, 5.0, 7.0], [-2.0, 0.0, 1.0]])
    assert vagram.value_gradient(value, s2).tolist() == [[2.0, 3.0, 0.0], [-4.0, 3.0, 0.0]]
    assert not s2.requires_grad
    # IterVAML = squared value difference: V(1,1,·) = 4 vs V(1,0,·) = 1 → 9
    assert vagram.itervaml_loss(value, T([[1.0, 1.0, 0.0]]), T([[1.0, 0.0, 0.0]])).item() == pytest.approx(9.0)


def test_value_net_ignores_distractors():
    net = pend.fit_value_net(pend.value_iteration(11, 3, 0.9, 20), width=8, steps=5, lr=1e-2, seed=0)
    s = torch.randn(4, 6)
    g = vagram.value_gradient(net, s)
    assert torch.equal(g[:, 3:], torch.zeros(4, 3)) and bool((g[:, :3].abs() > 0).any())


def test_gradient_conditioner_clips_and_normalises():
    # norms 1, 2, 3, 10 in one group; the 0.5 quantile is 2.5 → 3 and 10 are clipped to 2.5
    g = T([[[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 10.0]]])
    cond = vagram.GradientConditioner(quantile=0.5, decay=0.9)
    out = cond(g)
    assert cond.running.tolist() == pytest.approx([4.0])  # started at the mean pre-clip norm
    assert out.norm(dim=-1)[0].tolist() == pytest.approx([0.25, 0.5, 0.625, 0.625])
    cond(2 * g)  # m ← 0.9·4 + 0.1·8
    assert cond.running.tolist() == pytest.approx([4.4])
    official = vagram.GradientConditioner(quantile=0.5, decay=0.9, init=1.0)
    official(g)
    assert official.running.tolist() == pytest.approx([0.9 + 0.4])


def test_vagram_model_ignores_zero_gradient_coordinates():
    """With g = 0 on a coordinate, VaGraM leaves that output unfitted; MSE fits it."""
    train, _ = ex.make_data([0], 2, 512, salt=0)

    def value(s):
        return s[..., 2]  # only θ̇ matters

    model = ex.train_models(
        train, value, width=16, steps=150, lr=1e-2, batch=128, quantile=1.0, seed=0, n_distractors=2
    )
    errs = ex.held_out_errors(model, ex.make_data([0], 2, 256, salt=1)[0], value)
    assert errs["mse_distractor"][1] > 3 * errs["mse_distractor"][0]  # VaGraM (index 1) ignores z


# --- planning -----------------------------------------------------------------------------------------------


def test_plan_action_picks_the_best_lookahead():
    class Shift:  # a "model" that moves θ̇ by u
        def __call__(self, s, a):
            return s + torch.cat([torch.zeros_like(a), torch.zeros_like(a), a], -1), None

    def value(s):
        return -((s[..., 2] - 1.0) ** 2)  # best θ̇' = 1

    s = T([[[1.0, 0.0, 0.0]]])
    a = vagram.plan_action(Shift(), value, lambda s, u: torch.zeros_like(u), s, T([-2.0, 0.0, 1.0, 2.0]), 0.9)
    assert a.tolist() == [[[1.0]]]


# --- claims -------------------------------------------------------------------------------------------------


def test_return_claim_three_ways():
    mse = np.array([-1000.0, -1100.0, -900.0])
    holds = vagram.return_claim(mse + np.array([800.0, 900.0, 700.0]), mse, 12, 8)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == 0.0
    assert vagram.return_claim(mse - 300.0 + np.array([0, 10, -10]), mse, 12, 8).verdict is Verdict.DOES_NOT_HOLD
    assert vagram.return_claim(mse + np.array([500.0, -600.0, 50.0]), mse, 12, 8).verdict is Verdict.INCONCLUSIVE
    nan = vagram.return_claim(np.array([1.0, float("nan"), 2.0]), mse, 12, 8)
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail


def test_value_error_claim_three_ways():
    mse = np.array([30.0, 25.0, 28.0])
    holds = vagram.value_error_claim(np.array([3.0, 4.0, 2.0]), mse, 12)
    assert holds.verdict is Verdict.HOLDS and not holds.higher_is_better and holds.margin == 0.5
    assert vagram.value_error_claim(mse * 0.9, mse, 12).verdict is Verdict.DOES_NOT_HOLD
    assert vagram.value_error_claim(mse * np.array([0.1, 0.9, 0.5]), mse, 12).verdict is Verdict.INCONCLUSIVE
    assert vagram.value_error_claim(np.array([1.0, float("nan"), 1.0]), mse, 12).verdict is Verdict.INCONCLUSIVE


def test_distractor_trend_claim_three_ways():
    low = np.array([0.0, 5.0, -5.0])
    assert vagram.distractor_trend_claim(low, low + 500.0 + np.arange(3), 0, 12).verdict is Verdict.HOLDS
    assert vagram.distractor_trend_claim(low, low - 500.0 + np.arange(3), 0, 12).verdict is Verdict.DOES_NOT_HOLD
    assert vagram.distractor_trend_claim(low, low + np.array([900, -900, 10]), 0, 12).verdict is Verdict.INCONCLUSIVE
    assert vagram.distractor_trend_claim(low, [1.0, float("nan"), 2.0], 0, 12).verdict is Verdict.INCONCLUSIVE


# --- divergence, knobs, the run -----------------------------------------------------------------------------


def test_huge_learning_rate_diverges_naming_the_arm():
    train, _ = ex.make_data([0], 2, 256, salt=0)
    with pytest.raises(DivergenceError, match=r"(MSE \(MLE\)|VaGraM) D=2 seed 0"):
        ex.train_models(
            train, lambda s: s[..., 2], width=4, steps=20, lr=1e12, batch=64, quantile=0.95, seed=0, n_distractors=2
        )


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="sweep_distractors"):
        vagram.run(sweep_distractors="0,a")
    with pytest.raises(ValueError, match="sweep_distractors"):
        vagram.run(sweep_distractors="0,999")
    with pytest.raises(ValueError, match="batch"):
        vagram.run(n_train=100, batch=256)
    with pytest.raises(ValueError, match="unknown parameter"):
        vagram.run(widht=8)
    assert ex.distractor_counts(ex.Knobs(n_distractors=12, sweep_distractors="24, 0,12")) == [0, 12, 24]


@pytest.mark.slow
def test_quick_preset_run_has_claims_and_figures():
    result = vagram.run(progress=False)
    assert isinstance(result, Result) and result.claims[0].headline
    assert len(result.claims) == 3 and all(math.isfinite(v) for k, v in result.metrics.items())
    arms = {(a.arm.key, a.n_distractors): a for a in result.extras["arms"]}
    assert set(arms) == {("mse", 0), ("vagram", 0), ("mse", 12), ("vagram", 12)}
    gap = np.subtract(arms[("vagram", 12)].returns, arms[("mse", 12)].returns)
    assert result.claims[0].values == pytest.approx(tuple(gap), abs=1e-9)
    assert result.metrics["return_gap"] == pytest.approx(gap.mean(), abs=1e-6)
    # the MSE model fits every coordinate better in total; VaGraM spends nothing on the distractors
    assert result.metrics["mse_mse_d12"] < result.metrics["mse_vagram_d12"]
    assert {"return_vs_d", "error_split", "value", "value_error"} <= set(result.figures)
    assert set(result.history["metric"]) == {"value_error", "mse"}


def test_method_file_is_the_paper_only():
    source = (Path(vagram.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2204.01464" in source
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment", "figures"):
        assert banned not in source

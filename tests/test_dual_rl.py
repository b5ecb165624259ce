"""Dual RL (29): ReCOIL's dual and the f-DVL / XQL / IQL value losses against hand computations, both training loops
on tiny exact MDPs, the overflow bookkeeping of XQL's arm, the claim logic, divergence, bad knobs, one quick run."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import labkit.core.params as params_module
from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.methods import dual_rl
from labkit.substrates import gridworld as gw
from labkit.substrates.rl import expectile_loss

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


# --- ReCOIL's pieces ------------------------------------------------------------------------------------


def test_chi2_conjugate_by_hand_and_as_a_supremum():
    # f*(y) = y + y²/4: f*(2) = 3, f*(−2) = −1, f*(0) = 0
    assert dual_rl.chi2_conjugate(T([2.0, -2.0, 0.0])).tolist() == pytest.approx([3.0, -1.0, 0.0])
    # f*(y) = sup_t [t·y − (t − 1)²] over a fine grid of t
    t = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    for y in (-1.5, 0.3, 2.0):
        assert float((t * y - (t - 1) ** 2).max()) == pytest.approx(float(dual_rl.chi2_conjugate(T(y))), abs=1e-6)


def test_soft_value_by_hand_with_and_without_the_support():
    q = T([[0.0, math.log(3.0)], [5.0, 1.0]])  # (S=2, A=2)
    assert dual_rl.soft_value(q, 1.0).tolist() == pytest.approx([math.log(4.0), 5.0 + math.log(1 + math.exp(-4))])
    valid = T([[True, False], [False, False]])  # the second state has no data: all actions count
    assert dual_rl.soft_value(q, 1.0, valid).tolist() == pytest.approx([0.0, 5.0 + math.log(1 + math.exp(-4))])
    assert dual_rl.soft_value(q, 1e-3).tolist() == pytest.approx([math.log(3.0), 5.0], abs=1e-6)  # τ → 0: max


def test_bellman_residual_zeroes_absorbing_next_states():
    # y = γ(1 − done)V(s') − Q(s,a): γ = 0.5, V' = 4, Q = 1
    assert dual_rl.bellman_residual(T([1.0, 1.0]), T([4.0, 4.0]), T([0.0, 1.0]), 0.5).tolist() == [1.0, -1.0]


def test_recoil_loss_by_hand():
    # β = 0.2, γ = 0.9, V(s0) = 2: start 0.2·0.1·2 = 0.04
    # expert y = −2: 0.2·f*(−2) = −0.2;  data y = ±1 (½ each): 0.8·½·(1/4 + 1/4) = 0.2
    loss = dual_rl.recoil_loss(T([[-2.0]]), T([[1.0]]), T([[1.0, -1.0]]), T([[0.5, 0.5]]), T([2.0]), 0.2, 0.9)
    assert loss.item() == pytest.approx(0.04 - 0.2 + 0.2, abs=1e-6)


def test_recoil_loss_is_the_mixture_form_and_beta_one_is_iq_learn():
    gen = torch.Generator().manual_seed(0)
    y_e, y_s = torch.randn(3, 5, generator=gen), torch.randn(3, 7, generator=gen)
    w_e, w_s = torch.full((3, 5), 0.2), torch.full((3, 7), 1 / 7)
    v0, beta, gamma = torch.randn(3, generator=gen), 0.3, 0.95
    f = dual_rl.chi2_conjugate
    # β(1−γ)V(s0) + E_{d_mix^{E,S}}[f*(y)] − (1−β)E_{d^S}[y]
    mixture = beta * (1 - gamma) * v0 + beta * (w_e * f(y_e)).sum(-1) + (1 - beta) * (w_s * f(y_s)).sum(-1)
    mixture = mixture - (1 - beta) * (w_s * y_s).sum(-1)
    assert torch.allclose(dual_rl.recoil_loss(y_e, w_e, y_s, w_s, v0, beta, gamma), mixture, atol=1e-6)
    # β = 1: −[E_E φ(Q − γV') − (1−γ)V(s0)] with φ(x) = −f*(−x) (IQ-Learn's concave φ; χ²: x − x²/4)
    implicit_reward = -y_e  # Q − γV'
    iq_objective = (w_e * (implicit_reward - implicit_reward**2 / 4)).sum(-1) - (1 - gamma) * v0
    assert torch.allclose(dual_rl.recoil_loss(y_e, w_e, y_s, w_s, v0, 1.0, gamma), -iq_objective, atol=1e-6)


def test_recoil_terms_pull_the_residual_where_the_card_says():
    """∂/∂y of the expert term f*(y) is 1 + y/2 (zero at y = −2, implicit reward 2); of the data term f*(y) − y it is
    y/2 (zero at y = 0: Bellman consistency with zero reward)."""
    y = T([[-2.0, 0.0, 1.0]], requires_grad=True)
    w = T([[1.0, 1.0, 1.0]])
    dual_rl.recoil_loss(y, w, y.detach()[:, :0], w[:, :0], T([0.0]), 1.0, 0.9).backward()
    assert y.grad.tolist()[0] == pytest.approx([0.0, 1.0, 1.5])
    y.grad = None
    dual_rl.recoil_loss(y.detach()[:, :0], w[:, :0], y, w, T([0.0]), 0.0, 0.9).backward()
    assert y.grad.tolist()[0] == pytest.approx([-1.0, 0.0, 0.5])


def test_greedy_in_support_and_uniform_elsewhere():
    q = T([[[1.0, 5.0, 2.0], [0.0, 0.0, 0.0]]])  # (K=1, S=2, A=3)
    valid = T([[[True, False, True], [False, False, False]]])
    pol = dual_rl.greedy_in_support(q, valid)[0]
    assert pol.tolist() == [[0.0, 0.0, 1.0], pytest.approx([1 / 3] * 3)]  # 5 is outside the data: not taken


# --- f-DVL, XQL, IQL value losses -------------------------------------------------------------------------


def test_value_losses_by_hand():
    x = T([2.0, -2.0, -6.0])
    # χ², λ = 0.8: 0.8·max(x + x²/4, 0) − 0.2·x
    assert dual_rl.chi2_value_loss(x, 0.8).tolist() == pytest.approx([2.4 - 0.4, 0.4, 0.8 * 3.0 + 1.2])
    # TV, λ = 0.8: 0.8·max(x, 0) − 0.2·x
    assert dual_rl.tv_value_loss(x, 0.8).tolist() == pytest.approx([1.6 - 0.4, 0.4, 1.2])
    # Gumbel, α = 2: e^{x/2} − x/2 − 1
    assert dual_rl.gumbel_value_loss(x, 2.0).tolist() == pytest.approx([math.e - 2, math.exp(-1), math.exp(-3) + 2])
    # expectile τ = 0.8: 0.8·x² above 0, 0.2·x² below
    assert dual_rl.expectile_value_loss(x, 0.8).tolist() == pytest.approx([3.2, 0.8, 7.2])
    assert dual_rl.huber(T([1.0, -3.0, 30.0]), delta=2.0).tolist() == pytest.approx([0.5, 4.0, 58.0])


def test_expectile_loss_matches_the_rl_substrates_iql():
    x = torch.randn(100, generator=torch.Generator().manual_seed(1))
    assert dual_rl.expectile_value_loss(x, 0.7).mean().item() == pytest.approx(expectile_loss(x, 0.7).item(), rel=1e-6)


def test_gumbel_overflows_in_float32_unless_clipped():
    x = T([100.0])
    assert math.isinf(dual_rl.gumbel_value_loss(x, 1.0).item())
    assert dual_rl.gumbel_value_loss(x, 1.0, clip=7.0).item() == pytest.approx(math.exp(7) - 8, rel=1e-6)
    assert dual_rl.ValueLoss("gumbel", 1.0).may_overflow and not dual_rl.ValueLoss("chi2", 0.8).may_overflow
    with pytest.raises(ValueError, match="unknown value loss"):
        dual_rl.ValueLoss("kl", 1.0)


def test_the_value_losses_are_implicit_maximisers():
    """Minimised over a scalar V against Q samples: TV gives the upper (1−λ)/λ quantile, Gumbel the soft maximum
    α·log mean e^{Q/α}, expectile the τ-expectile, χ² (λ = 0.8) the maximum when the top action is common."""
    grid = torch.linspace(-5, 15, 20_001, dtype=torch.float64)

    def argmin(loss, q):
        return float(grid[loss(q[None, :] - grid[:, None]).mean(1).argmin()])

    q = torch.arange(100, dtype=torch.float64) / 10  # 0.0 … 9.9
    assert argmin(lambda x: dual_rl.tv_value_loss(x, 0.8), q) == pytest.approx(7.45, abs=0.06)  # P(Q > V) = ¼
    assert argmin(lambda x: dual_rl.gumbel_value_loss(x, 2.0), q) == pytest.approx(
        float(2.0 * torch.log(torch.exp(q / 2).mean())), abs=2e-3
    )
    expectile = argmin(lambda x: dual_rl.expectile_value_loss(x, 0.8), q)
    assert float((torch.where(q < expectile, 0.2, 0.8) * (q - expectile)).sum()) == pytest.approx(0.0, abs=0.1)
    top = T([1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 4.0, 4.0], dtype=torch.float64)  # the best action taken 5/8 of the time
    assert argmin(lambda x: dual_rl.chi2_value_loss(x, 0.8), top) == pytest.approx(4.0, abs=2e-3)


# --- AWR ----------------------------------------------------------------------------------------------------


def test_awr_weights_are_clipped_and_the_tabular_policy_is_the_weighted_counts():
    w = dual_rl.awr_weights(T([1.0, 10.0, 1e4]), T([0.0, 0.0, 0.0]), 3.0)
    assert w.tolist() == pytest.approx([math.exp(3.0), 100.0, 100.0], rel=1e-6)
    s, a, w = T([[0, 0, 0, 1]]), T([[0, 1, 1, 2]]), T([[1.0, 1.0, 2.0, 5.0]])
    pol = dual_rl.awr_policy(s, a, w, n_states=3, n_actions=4)[0]
    assert pol.tolist() == [[0.25, 0.75, 0, 0], [0, 0, 1, 0], [0.25] * 4]
    # it minimises awr_loss: gradient descent on a logits table gets there
    logits = torch.zeros(3, 4, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.3)
    for _ in range(500):
        opt.zero_grad()
        dual_rl.awr_loss(logits, s[0], a[0], w[0]).backward()
        opt.step()
    assert logits.softmax(-1)[:2].tolist() == [pytest.approx(r, abs=0.02) for r in pol[:2].tolist()]


def test_awr_policy_is_uniform_where_every_weight_underflowed():
    pol = dual_rl.awr_policy(T([[0, 0]]), T([[0, 1]]), T([[1e-44, 2e-44]]), n_states=1, n_actions=2)
    assert pol[0, 0].tolist() == [0.5, 0.5]


# --- the data record and the two loops on tiny exact MDPs -------------------------------------------------


def tiny_world():
    return gw.GridWorld.from_holes(3, [(1, 1)], slip=0.0, horizon=10, gamma=0.9)


def test_transitions_weight_the_distinct_steps_and_pad_with_zero_weight():
    world = tiny_world()
    data = [gw.rollouts(world, gw.uniform_policy(world), n, np.random.default_rng(n)) for n in (5, 40)]
    table = dual_rl.to_transitions(data, "cpu", reward_scale=10.0)
    assert table.weight.sum(1).tolist() == pytest.approx([1.0, 1.0])
    n_distinct = [len(np.unique(np.stack([d.observations, d.actions, d.next_observations], 1), axis=0)) for d in data]
    assert (table.weight > 0).sum(1).tolist() == n_distinct
    goal_rows = table.s_next == world.goal
    assert torch.equal(table.reward[goal_rows], torch.full_like(table.reward[goal_rows], 10.0))
    assert torch.equal(table.done.bool(), torch.as_tensor(world.terminal)[table.s_next] & (table.weight > 0))
    # the weighted mean over distinct rows is the mean over all steps
    steps = data[1]
    assert float((table.weight[1] * table.s[1].float()).sum()) == pytest.approx(steps.observations.mean(), rel=1e-6)


def test_recoil_recovers_the_expert_on_a_deterministic_grid_and_exact_returns_say_so():
    world = tiny_world()
    expert_data = gw.rollouts(world, gw.expert_policy(world), 1, np.random.default_rng(0))
    replay_data = gw.rollouts(world, gw.uniform_policy(world), 50, np.random.default_rng(1))
    valid = dual_rl.support([(expert_data, replay_data)], world, "cpu")
    expert, replay = dual_rl.to_transitions([expert_data], "cpu"), dual_rl.to_transitions([replay_data], "cpu")
    q = dual_rl.train_recoil(
        torch.zeros(1, 9, 4),
        expert,
        replay,
        world.start,
        T([0.5]),
        gamma=0.9,
        tau=0.05,
        valid=valid,
        n_steps=300,
        lr=0.1,
    )
    policy = dual_rl.greedy_in_support(q, valid)[0].double().numpy()
    assert gw.expected_return(world, policy) == pytest.approx(1.0)  # reaches G with certainty (no slip)
    assert gw.normalised_return(world, gw.expected_return(world, policy), 1.0) == pytest.approx(1.0)
    assert gw.normalised_return(world, gw.expected_return(world, gw.uniform_policy(world)), 1.0) == pytest.approx(0.0)
    # the implicit reward Q − γV' is positive on the expert's transitions and near 0 on the random data's
    v = dual_rl.soft_value(q, 0.05, valid)

    def implicit_reward(data):
        y = dual_rl.bellman_residual(dual_rl.q_at(q, data.s, data.a), v.gather(1, data.s_next), data.done, 0.9)
        return float((data.weight * -y).sum())

    assert implicit_reward(expert) > 0.5 > abs(implicit_reward(replay))


def dvl_problem(losses, q0=None, n_steps=1500):
    world = tiny_world()
    behaviour = gw.noisy_policy(gw.expert_policy(world), 0.5)
    data = dual_rl.to_transitions([gw.rollouts(world, behaviour, 200, np.random.default_rng(2))], "cpu", 10.0)
    k = len(losses)
    data = data.select(torch.zeros(k, dtype=torch.long))
    q0 = torch.zeros(k, 9, 4) if q0 is None else q0
    return world, data, dual_rl.train_dvl(q0, torch.zeros(k, 9), data, losses, gamma=0.9, n_steps=n_steps, lr=0.03)


def test_every_implicit_maximiser_learns_the_tiny_grid_and_the_returns_are_exact():
    losses = [dual_rl.ValueLoss(*c) for c in (("chi2", 0.8), ("tv", 0.8), ("gumbel", 1.0), ("expectile", 0.8))]
    world, data, tables = dvl_problem(losses)
    w = dual_rl.awr_weights(dual_rl.q_at(tables.q, data.s, data.a), tables.v.gather(1, data.s), 3.0) * data.weight
    policies = dual_rl.awr_policy(data.s, data.a, w, 9, 4)
    returns = [gw.normalised_return(world, gw.expected_return(world, p.double().numpy()), 1.0) for p in policies]
    behaviour = gw.normalised_return(world, gw.expected_return(world, gw.noisy_policy(gw.expert_policy(world), 0.5)), 1)
    assert min(returns) > 0.9 > behaviour
    assert tables.overflow_step.tolist() == [-1] * 4 and torch.isfinite(tables.max_value_loss).all()


def test_an_overflowing_gumbel_arm_is_frozen_and_recorded_while_its_neighbours_train_as_if_alone():
    losses = [dual_rl.ValueLoss("gumbel", 1.0), dual_rl.ValueLoss("chi2", 0.8)]
    q0 = torch.randn(2, 9, 4, generator=torch.Generator().manual_seed(0)) * 60.0
    q0[1] = q0[0]
    _, _, both = dvl_problem(losses, q0, n_steps=200)
    assert both.overflow_step[0].item() == 0 and math.isinf(both.max_value_loss[0].item())
    assert torch.isfinite(both.q).all() and torch.isfinite(both.v).all()
    assert torch.equal(both.q[0], q0[0]) and torch.equal(both.v[0], torch.zeros(9))  # frozen before any update
    _, _, alone = dvl_problem(losses[1:], q0[1:], n_steps=200)
    assert torch.allclose(both.q[1], alone.q[0]) and torch.allclose(both.v[1], alone.v[0])
    assert both.overflow_step[1].item() == -1 and both.max_value_loss[1].item() == alone.max_value_loss[0].item()


# --- claims ---------------------------------------------------------------------------------------------------


def test_recoil_claim_three_ways():
    bc, iq = [0.5, 0.55, 0.6], [0.55, 0.6, 0.6]
    holds = dual_rl.recoil_claim([0.9, 0.95, 0.92], bc, iq, beta=0.2)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == 0.0
    assert holds.values == pytest.approx((0.2, 0.2, 0.12))  # min(R − BC − 0.2, R − IQ − 0.15)
    assert dual_rl.recoil_claim([0.6, 0.62, 0.61], bc, iq, 0.2).verdict is Verdict.DOES_NOT_HOLD
    assert dual_rl.recoil_claim([0.9, 0.6, 1.0], bc, iq, 0.2).verdict is Verdict.INCONCLUSIVE
    nan = dual_rl.recoil_claim([0.9, float("nan"), 0.92], bc, iq, 0.2)
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail


def test_dvl_return_claim_three_ways():
    assert dual_rl.dvl_return_claim([0.95, 0.96, 0.97], [0.94, 0.95, 0.96], 0.8).verdict is Verdict.HOLDS
    assert dual_rl.dvl_return_claim([0.95, 0.96, 0.97], [0.5, 0.6, 0.55], 0.8).verdict is Verdict.DOES_NOT_HOLD
    assert dual_rl.dvl_return_claim([0.95, 0.8, 0.97], [0.95, 0.96, 0.97], 0.8).verdict is Verdict.INCONCLUSIVE
    assert dual_rl.dvl_return_claim([0.95, float("nan"), 0.97], [1, 1, 1], 0.8).verdict is Verdict.INCONCLUSIVE


def test_stress_claims_three_ways_with_overflow_counted_as_float32_max():
    inf = float("inf")
    blowup = dual_rl.xql_blowup_claim([inf, inf, 1e30], alpha=1.0)
    assert blowup.verdict is Verdict.HOLDS and blowup.numbers["seeds that overflowed float32"] == 2.0
    assert blowup.values[0] == pytest.approx(math.log10(float(np.finfo(np.float32).max)))
    assert dual_rl.xql_blowup_claim([1e2, 1e3, 1e2], 1.0).verdict is Verdict.DOES_NOT_HOLD
    assert dual_rl.xql_blowup_claim([inf, 1e2, 1e3], 1.0).verdict is Verdict.INCONCLUSIVE
    assert dual_rl.xql_blowup_claim([inf, float("nan"), inf], 1.0).verdict is Verdict.INCONCLUSIVE
    bounded = dual_rl.dvl_bounded_claim([100.0, 200.0, 150.0], [10.0, 12.0, 300.0])
    assert bounded.verdict is Verdict.HOLDS and not bounded.higher_is_better
    assert bounded.values == pytest.approx((2.0, math.log10(200.0), math.log10(300.0)))
    assert dual_rl.dvl_bounded_claim([1e6, 1e7, 1e6], [1.0, 1.0, 1.0]).verdict is Verdict.DOES_NOT_HOLD
    assert dual_rl.dvl_bounded_claim([1e2, 1e7, 1e1], [1.0, 1.0, 1.0]).verdict is Verdict.INCONCLUSIVE
    assert dual_rl.dvl_bounded_claim([1e2, float("nan"), 1e1], [1, 1, 1]).verdict is Verdict.INCONCLUSIVE


# --- knobs, divergence, the run ----------------------------------------------------------------------------


def test_bad_knobs_are_refused_before_any_work():
    with pytest.raises(ValueError, match="beta_high"):
        dual_rl.run(beta=0.5, beta_high=0.5)
    with pytest.raises(ValueError, match="alpha_high"):
        dual_rl.run(alpha=3.0)
    with pytest.raises(ValueError, match="out of range"):
        dual_rl.run(beta=1.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        dual_rl.run(betta=0.3)


@pytest.fixture
def without_range_checks(monkeypatch):
    """Values are still parsed and type-checked; only the [low, high] range is lifted (as in test_divergence)."""
    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))


SMALL = {"n_seeds": 2, "n_replay": 30, "n_behaviour": 30, "log_every": 10}


def test_a_huge_learning_rate_stops_the_run_naming_the_arm(without_range_checks):
    with pytest.raises(DivergenceError, match=r"at step \d+ in 'ReCOIL β=0.2 seed 0'"):
        dual_rl.run(progress=False, recoil_lr=1e12, recoil_steps=20, dvl_steps=20, **SMALL)
    with pytest.raises(DivergenceError, match=r"at step \d+ in 'IQL τ=0.8 seed 0'"):
        dual_rl.run(progress=False, dvl_lr=1e12, recoil_steps=5, dvl_steps=20, **SMALL)


def test_a_small_run_has_the_headline_first_and_its_numbers_match():
    result = dual_rl.run(progress=False, recoil_steps=200, dvl_steps=100, **SMALL)
    assert isinstance(result, Result) and result.claims[0].headline
    assert [c.headline for c in result.claims] == [True, False, False, False]
    by = {r.arm.key: r for r in result.extras["arms"]}
    assert len(by) == 4 + 10 and all(len(r.returns) == 2 for r in by.values())
    excess = np.minimum(
        np.array(by["recoil"].returns) - np.array(by["bc"].returns) - 0.2,
        np.array(by["recoil"].returns) - np.array(by["iq_learn"].returns) - 0.15,
    )
    assert result.claims[0].values == pytest.approx(tuple(excess), abs=1e-12)
    assert result.metrics["return_recoil"] == pytest.approx(np.mean(by["recoil"].returns))
    assert by["stress_xql"].overflowed == result.metrics["overflowed_stress_xql"]
    assert all(math.isfinite(v) for v in result.metrics.values())
    labels = {r.arm.label for r in by.values()}
    assert set(result.history["series"]) == labels and set(result.history["seed"]) == {0, 1}
    expected = {"returns_imitation", "returns_offline_rl", "stress_max_loss", "stress_trace", "value_heatmap"}
    assert expected <= set(result.figures)


@pytest.mark.slow
def test_quick_preset_run():
    result = dual_rl.run("quick", progress=False, record=False)
    m, by = result.metrics, {r.arm.key: r for r in result.extras["arms"]}
    assert result.params["n_seeds"] == 3 and len(by["recoil"].returns) == 3
    assert m["return_recoil"] > m["return_bc"] and 0.1 < m["return_behaviour"] < 0.5
    assert min(m["return_chi2"], m["return_tv"], m["return_iql"], m["return_xql"]) > 0.8
    assert m["overflowed_stress_xql"] >= 2 and m["log10_max_value_loss_stress_chi2"] < 4.0
    assert {c.verdict for c in result.claims} <= set(Verdict)


def test_method_file_is_the_paper_only():
    source = (Path(dual_rl.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2302.08560" in source
    for banned in ("labkit.core", "labkit.viz", "plotly", "experiment", "figures", "widgets"):
        assert banned not in source

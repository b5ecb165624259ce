"""The tabular gridworld (labkit.substrates.gridworld): the model, the exact tools against hand-derived values and
Monte-Carlo estimates, rollouts, D4RL normalisation, and the gymnasium face."""

import numpy as np
import pytest

from labkit.substrates import gridworld as gw
from labkit.substrates.rl import evaluate

GAMMA = 0.9


def open_2x2(slip=0.0, horizon=10, gamma=GAMMA):
    """S . / . G: four cells, no holes."""
    return gw.GridWorld(("S.", ".G"), slip=slip, horizon=horizon, gamma=gamma)


# --------------------------------------------------------------------------------------------- the model


def test_transition_tensor_is_stochastic_and_slips_as_described():
    m = gw.GridWorld.slippery_8x8()
    assert m.P.shape == (64, 4, 64) and m.R.shape == (64, 4)
    np.testing.assert_allclose(m.P.sum(-1), 1.0)
    # from (3, 3) every move lands on a free cell: the intended one w.p. 1 − slip + slip/4, each other w.p. slip/4
    s = m.state(3, 3)
    assert m.P[s, gw.RIGHT, m.state(3, 4)] == pytest.approx(0.7 + 0.075)
    assert m.P[s, gw.RIGHT, m.state(2, 3)] == pytest.approx(0.075)
    # the goal and the holes absorb, with no reward from them
    for t in [m.goal, *m.holes]:
        assert (m.P[t, :, t] == 1).all() and (m.R[t] == 0).all()
    # reward = Pr(enter G): from (6, 7) going down reaches G w.p. 0.775
    assert m.R[m.state(6, 7), gw.DOWN] == pytest.approx(0.775)
    assert len(m.holes) == 8 and m.start == 0 and m.goal == 63


def test_presets_and_layout_checks():
    m = gw.GridWorld.slippery_8x8()
    assert (m.size, m.slip, m.horizon, m.gamma) == (8, 0.3, 60, 0.95)
    lamo = gw.GridWorld.lamo_7x7()
    assert lamo.size == 7 and lamo.shortest_path_length() == 12
    with pytest.raises(ValueError, match="exactly one"):
        gw.GridWorld(("S.", ".."))
    with pytest.raises(ValueError, match="n strings"):
        gw.GridWorld(("S..", ".G"))
    with pytest.raises(ValueError, match="slip"):
        gw.GridWorld(("S.", ".G"), slip=1.5)
    with pytest.raises(ValueError, match="gamma"):
        gw.GridWorld(("S.", ".G"), gamma=1.0)


def test_random_layout_is_fixed_per_seed_and_solvable():
    a, b, c = gw.GridWorld.random(12, 18, seed=3), gw.GridWorld.random(12, 18, seed=3), gw.GridWorld.random(12, 18, 4)
    assert a.layout == b.layout and a.layout != c.layout
    assert len(a.holes) == 18 and a.shortest_path_length() is not None


# --------------------------------------------------------------------------------------------- exact tools


def test_value_iteration_on_a_hand_mdp_without_slip():
    # S=(0,0), A=(0,1), B=(1,0), G=(1,1). V*(A) = V*(B) = 1 (one step into G), V*(S) = γ (two steps)
    m = open_2x2()
    sol = gw.value_iteration(m)
    np.testing.assert_allclose(sol.v[[0, 1, 2]], [GAMMA, 1.0, 1.0], atol=1e-10)
    # Q*(S, left) = 0 + γ·V*(S) (the wall keeps it in S) = γ²;  Q*(A, right) = γ·V*(A) = γ
    assert sol.q[0, gw.LEFT] == pytest.approx(GAMMA**2)
    assert sol.q[1, gw.RIGHT] == pytest.approx(GAMMA)
    assert sol.policy[1].argmax() == gw.DOWN and sol.policy[2].argmax() == gw.RIGHT


def test_value_iteration_with_full_slip_matches_the_two_state_reduction():
    # slip 1: every action is uniformly random. By symmetry V(A) = V(B) = x, V(S) = y, and
    #   y = γ(½y + ½x)                 (S: left/up stay, right → A, down → B)
    #   x = ¼·1 + γ(¼y + ½x)           (A: down → G with reward 1, left → S, right/up stay)
    m = open_2x2(slip=1.0)
    lhs = np.array([[1 - GAMMA / 2, -GAMMA / 2], [-GAMMA / 4, 1 - GAMMA / 2]])
    y, x = np.linalg.solve(lhs, [0.0, 0.25])
    sol = gw.value_iteration(m)
    np.testing.assert_allclose(sol.v[:3], [y, x, x], atol=1e-10)
    # any policy is optimal here, so policy evaluation gives the same values
    np.testing.assert_allclose(gw.policy_evaluation(m, gw.uniform_policy(m)).v[:3], [y, x, x], atol=1e-10)


def test_policy_evaluation_is_the_fixed_point_of_the_bellman_equation():
    m = gw.GridWorld.slippery_8x8()
    pi = gw.noisy_policy(gw.expert_policy(m), 0.3)
    ev = gw.policy_evaluation(m, pi)
    # V = Σ_a π(a|s) Q(s,a);  Q = R + γ P^c V
    np.testing.assert_allclose(ev.v, (pi * ev.q).sum(1), atol=1e-12)
    np.testing.assert_allclose(ev.q, m.R + m.gamma * m.P_continue @ ev.v, atol=1e-12)
    # the optimal policy's V equals V*
    sol = gw.value_iteration(m)
    np.testing.assert_allclose(gw.policy_evaluation(m, sol.policy).v, sol.v, atol=1e-9)


def test_occupancy_sums_and_the_return_identity():
    m = gw.GridWorld.slippery_8x8()
    pi = gw.noisy_policy(gw.expert_policy(m), 0.5)
    raw = gw.occupancy(m, pi, normalise=False)
    assert raw.sum() == pytest.approx(1 / (1 - m.gamma))  # Σ_t γ^t = 1/(1 − γ)
    d = gw.occupancy(m, pi)
    assert d.sum() == pytest.approx(1.0) and (d >= 0).all()
    # ρ0·V^π = 1/(1 − γ) · Σ_{s,a} d^π(s,a) r(s,a)
    assert gw.policy_evaluation(m, pi).v[m.start] == pytest.approx((d * m.R).sum() / (1 - m.gamma))
    # truncated at H with γ = 1: Σ = H (every step counts once, terminal states keep the mass)
    assert gw.occupancy(m, pi, gamma=1.0, horizon=m.horizon, normalise=False).sum() == pytest.approx(m.horizon)
    with pytest.raises(ValueError, match="infinite-horizon"):
        gw.occupancy(m, pi, gamma=1.0)


def test_occupancy_matches_monte_carlo():
    m = gw.GridWorld.slippery_8x8()
    pi = gw.noisy_policy(gw.expert_policy(m), 0.3)
    data = gw.rollouts(m, pi, 4000, 0)
    # the pooled (s, a) distribution of rollouts = the undiscounted H-step occupancy without the terminal mass
    empirical = data.state_action_counts(64, 4) / len(data)
    exact = gw.occupancy(m, pi, gamma=1.0, horizon=m.horizon, include_terminal=False)
    assert gw.tv_distance(empirical, exact) < 0.03
    # the discounted measure Σ_t γ^t 1(s_t, a_t), averaged over episodes
    disc = np.zeros((64, 4))
    np.add.at(disc, (data.observations, data.actions), m.gamma**data.timesteps)
    exact_disc = gw.occupancy(m, pi, horizon=m.horizon, include_terminal=False, normalise=False)
    assert np.abs(disc / data.n_episodes - exact_disc).sum() < 0.03 * exact_disc.sum()


def test_mixture_is_mixed_per_episode():
    m = gw.GridWorld.slippery_8x8()
    expert, rand = gw.expert_policy(m), gw.uniform_policy(m)
    mix = gw.mixture([expert, rand], [0.25, 0.75])
    # return and (unnormalised) occupancy are the weighted sums
    assert gw.expected_return(m, mix) == pytest.approx(
        0.25 * gw.expected_return(m, expert) + 0.75 * gw.expected_return(m, rand)
    )
    np.testing.assert_allclose(
        gw.occupancy(m, mix, normalise=False),
        0.25 * gw.occupancy(m, expert, normalise=False) + 0.75 * gw.occupancy(m, rand, normalise=False),
    )
    # episodes are pure: a deterministic expert (slip 0) and an always-left policy never share an episode
    m0 = gw.GridWorld.slippery_8x8(slip=0.0)
    left = np.zeros((64, 4))
    left[:, gw.LEFT] = 1
    data = gw.rollouts(m0, gw.mixture([gw.expert_policy(m0), left], [0.3, 0.7]), 400, 1)
    kinds = [set(data.actions[lo:hi] == gw.LEFT) for lo, hi in zip(data.episode_offsets[:-1], data.episode_offsets[1:])]
    assert all(len(k) == 1 for k in kinds)
    assert 0.22 < np.mean([k == {False} for k in kinds]) < 0.38
    with pytest.raises(ValueError, match="sum to 1"):
        gw.mixture([expert, rand], [0.5, 0.6])


def test_soft_q_iteration_sweeps():
    m = gw.GridWorld.slippery_8x8()
    rng = np.random.default_rng(0)
    reward, q0 = rng.normal(size=(64, 4)), rng.normal(size=(64, 4))
    tau = 0.1
    one = gw.soft_q_iteration(m, reward, temperature=tau, sweeps=1, q0=q0)
    # one sweep by hand: V0(s) = τ log Σ_a exp(Q0(s,a)/τ), Q1 = r + γ P^c V0 (terminal rows of r are zeroed)
    v0 = tau * np.log(np.exp(q0 / tau).sum(1))
    np.testing.assert_allclose(one.q, reward * ~m.terminal[:, None] + m.gamma * m.P_continue @ v0, atol=1e-10)
    np.testing.assert_allclose(one.policy.sum(1), 1.0)
    # a warm start continues where it left off: 2 + 3 sweeps = 5 sweeps
    two = gw.soft_q_iteration(m, reward, tau, 2, q0=q0)
    np.testing.assert_allclose(
        gw.soft_q_iteration(m, reward, tau, 3, q0=two.q).q, gw.soft_q_iteration(m, reward, tau, 5, q0=q0).q
    )
    # a torch reward works too; many sweeps at a small temperature approach the hard optimum
    import torch

    soft = gw.soft_q_iteration(m, torch.tensor(m.R), temperature=1e-4, sweeps=800)
    np.testing.assert_allclose(soft.v, gw.value_iteration(m).v, atol=1e-3)


def test_no_slip_expert_is_deterministic_and_takes_the_shortest_path():
    m = gw.GridWorld.slippery_8x8(slip=0.0)
    expert = gw.expert_policy(m)
    assert ((expert == 0) | (expert == 1)).all() and (expert.sum(1) == 1).all()
    data = gw.rollouts(m, expert, 20, 0)
    assert (data.episode_lengths == m.shortest_path_length()).all() and m.shortest_path_length() == 14
    assert data.terminals[data.episode_offsets[1:] - 1].all() and (data.episode_returns() == 1).all()
    assert gw.expected_return(m, expert) == pytest.approx(1.0)
    assert gw.expected_return(m, expert, discounted=True) == pytest.approx(m.gamma**13)


def test_normalised_return_of_expert_and_random():
    m = gw.GridWorld.slippery_8x8()
    low, high = gw.reference_returns(m)
    assert 0 <= low < 0.01 < 0.5 < high < 1
    assert gw.normalised_return(m, gw.expected_return(m, gw.expert_policy(m))) == pytest.approx(100.0)
    assert gw.normalised_return(m, gw.expected_return(m, gw.uniform_policy(m))) == pytest.approx(0.0)
    assert gw.normalised_return(m, high, scale=1.0) == pytest.approx(1.0)
    # through evaluate: exact for tables, one value per seed
    ev = evaluate([gw.expert_policy(m), gw.uniform_policy(m)], m, seeds=[0, 1])
    assert ev.per_seed == pytest.approx((100.0, 0.0))
    sampled = evaluate(gw.expert_policy(m), m, n_episodes=400, seeds=[0, 1, 2], exact=False)
    assert abs(sampled.mean - 100) < 10 and sampled.interval.low < sampled.interval.high


# --------------------------------------------------------------------------------------------- data


def test_rollout_dataset_shapes_and_episode_boundaries():
    m = gw.GridWorld.slippery_8x8()
    data = gw.rollouts(m, gw.noisy_policy(gw.expert_policy(m), 0.5), 50, np.random.default_rng(7), behaviour="x")
    n = len(data)
    assert data.observations.shape == data.next_observations.shape == data.actions.shape == (n,)
    assert data.observations.dtype == np.int64 and data.discrete and data.behaviour == "x"
    assert data.n_episodes == 50 and data.episode_offsets[-1] == n and data.episode_lengths.sum() == n
    starts, ends = data.episode_offsets[:-1], data.episode_offsets[1:] - 1
    assert (data.observations[starts] == m.start).all() and (data.timesteps[starts] == 0).all()
    # within an episode the next observation is the following observation
    inner = np.setdiff1d(np.arange(n), ends)
    np.testing.assert_array_equal(data.next_observations[inner], data.observations[inner + 1])
    # an episode ends terminal (G or a hole) or truncated at H, and nowhere else
    assert (data.terminals[ends] == m.terminal[data.next_observations[ends]]).all()
    assert (data.truncations[ends] == (~data.terminals[ends] & (data.episode_lengths == m.horizon))).all()
    assert not (data.terminals | data.truncations)[inner].any()
    # reward 1 exactly on entering G
    np.testing.assert_array_equal(data.rewards, (data.next_observations == m.goal).astype(np.float32))
    # the same generator seed gives the same data
    again = gw.rollouts(m, gw.noisy_policy(gw.expert_policy(m), 0.5), 50, np.random.default_rng(7))
    np.testing.assert_array_equal(again.actions, data.actions)


def test_count_policy_is_tabular_bc():
    m = gw.GridWorld.slippery_8x8()
    data = gw.rollouts(m, gw.expert_policy(m), 30, 0)
    bc = gw.count_policy(data, m)
    seen = np.unique(data.observations)
    np.testing.assert_array_equal(bc[seen], gw.expert_policy(m)[seen])  # a deterministic expert is copied
    unseen = np.setdiff1d(np.arange(64), seen)
    np.testing.assert_allclose(bc[unseen], 0.25)


# --------------------------------------------------------------------------------------------- gymnasium face


def test_gym_env_passes_the_checker_and_follows_the_model():
    gym = pytest.importorskip("gymnasium")
    from gymnasium.utils.env_checker import check_env

    m = gw.GridWorld.slippery_8x8(slip=0.0)
    env = gw.gym_env(m)
    check_env(env, skip_render_check=True)
    assert isinstance(env.observation_space, gym.spaces.Discrete) and env.observation_space.n == 64
    expert = gw.expert_policy(m).argmax(1)
    obs, _ = env.reset(seed=0)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, r, terminated, truncated, info = env.step(expert[obs])
        total, steps, done = total + r, steps + 1, terminated or truncated
    assert (total, steps, terminated, int(obs)) == (1.0, 14, True, m.goal)
    # a policy that never moves is truncated after H steps
    env = gw.make_grid_env("lamo_7x7")
    env.reset(seed=1)
    for _ in range(env.mdp.horizon):
        _, _, terminated, truncated, _ = env.step(gw.UP)
    assert truncated and not terminated
    assert "@" in env.render()

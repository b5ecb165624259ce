"""Soft Actor-Critic (labkit.substrates.sac): each rule against a hand-computed case (the tanh log-prob correction
against torch's TanhTransform), the loop's divergence check, the cached expert's round trip (a damaged file is
retrained), bad input, the MuJoCo route of rl.expert_for, and in the slow test the whole loop against
stable-baselines3's SAC on Pendulum-v1 (same budget and hyper-parameters)."""

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from labkit.core.training import DivergenceError
from labkit.substrates import rl, sac

gym = pytest.importorskip("gymnasium")
pytest.importorskip("safetensors")

#: a budget that runs in about a second: the plumbing, not the learning
TINY = sac.SACConfig(steps=150, start_steps=50, batch_size=16, hidden=(8,), lr=1e-3)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------- the rules by hand


def test_squashed_log_prob_matches_torch_tanh_transform():
    gen = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(6, 3, generator=gen), 0.5 * torch.randn(6, 3, generator=gen)
    u = mean + log_std.exp() * torch.randn(6, 3, generator=gen)
    u = u.clamp(-3, 3)  # keep tanh(u) < 1 in float32, where torch's atanh is exact enough
    ref = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()]
    )
    expected = ref.log_prob(torch.tanh(u)).sum(-1)
    torch.testing.assert_close(sac.squashed_log_prob(u, mean, log_std), expected, atol=2e-4, rtol=1e-4)


def test_squashed_log_prob_by_hand_and_far_in_the_tail():
    zero = torch.zeros(1, 1)
    # u = μ = 0, σ = 1: log N(0; 0, 1) = −½·log 2π and log(1 − tanh² 0) = 0
    assert float(sac.squashed_log_prob(zero, zero, zero)) == pytest.approx(-0.5 * math.log(2 * math.pi), abs=1e-6)
    # u = 20: 1 − tanh²(20) rounds to 0 in float32 (log = −inf), while log(1 − tanh² u) = log 4 − 2u − 2·log(1 + e^−2u)
    u = torch.full((1, 1), 20.0)
    out = float(sac.squashed_log_prob(u, u, zero))  # μ = u: the Gaussian part is −½·log 2π
    assert math.isfinite(out)
    assert out == pytest.approx(-0.5 * math.log(2 * math.pi) - (math.log(4.0) - 40.0), rel=1e-6)


def test_soft_bellman_target_critic_and_actor_losses_by_hand():
    t = torch.tensor
    # y_0 = 1 + 0.9·(min(3, 4) − 0.5·(−1)) = 1 + 0.9·3.5 = 4.15;  y_1 = 2 (terminal: no bootstrap)
    y = sac.soft_q_target(t([1.0, 2.0]), t([0.0, 1.0]), t([3.0, 5.0]), t([4.0, 1.0]), t([-1.0, 0.5]), 0.5, 0.9)
    torch.testing.assert_close(y, t([4.15, 2.0]))
    # J_Q = ½·(mean((1−1)², (2−1)²) + mean((0−1)², (0−1)²)) = ½·(0.5 + 1) = 0.75
    assert float(sac.critic_loss(t([1.0, 2.0]), t([0.0, 0.0]), t([1.0, 1.0]))) == pytest.approx(0.75)
    # J_π = mean(0.5·(−1) − min(2, 1), 0.5·1 − min(0, 3)) = mean(−1.5, 0.5) = −0.5
    assert float(sac.actor_loss(t([-1.0, 1.0]), t([2.0, 0.0]), t([1.0, 3.0]), 0.5)) == pytest.approx(-0.5)


@pytest.mark.parametrize("log_prob, direction", [(2.0, +1), (-3.0, -1)])
def test_temperature_loss_raises_alpha_when_entropy_is_below_target(log_prob, direction):
    """H̄ = −1. log π = 2 (entropy −2 < H̄): a gradient step must raise α; log π = −3 (entropy 3 > H̄): lower it."""
    log_alpha = nn.Parameter(torch.tensor(math.log(0.5)))
    loss = sac.temperature_loss(log_alpha, torch.full((4,), log_prob), target_entropy=-1.0)
    # J = −log α·(log π + H̄) = −log 0.5·(log π − 1)
    assert float(loss.detach()) == pytest.approx(-math.log(0.5) * (log_prob - 1.0))
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(-(log_prob - 1.0))
    torch.optim.SGD([log_alpha], lr=0.1).step()
    assert np.sign(log_alpha.exp().item() - 0.5) == direction


def test_polyak_update_by_hand():
    net, target = nn.Linear(2, 1), nn.Linear(2, 1)
    nn.init.constant_(net.weight, 1.0), nn.init.constant_(net.bias, 1.0)
    nn.init.constant_(target.weight, 0.0), nn.init.constant_(target.bias, 0.0)
    sac.polyak_update(net, target, tau=0.1)
    torch.testing.assert_close(target.weight, torch.full((1, 2), 0.1))
    sac.polyak_update(net, target, tau=0.1)  # 0.1·1 + 0.9·0.1 = 0.19
    torch.testing.assert_close(target.bias, torch.full((1,), 0.19))
    torch.testing.assert_close(net.weight, torch.ones(1, 2))  # the online net is untouched


def test_replay_buffer_wraps_and_samples_what_was_added():
    buf = sac.ReplayBuffer(3, obs_dim=1, act_dim=1)
    for i in range(5):  # 0 and 1 are overwritten by 3 and 4
        buf.add([i], [0.1 * i], float(i), [i + 1], terminal=i == 4)
    assert len(buf) == 3
    obs, act, rew, nxt, done = buf.sample(200, np.random.default_rng(0))
    assert set(obs[:, 0].tolist()) == {2.0, 3.0, 4.0}
    torch.testing.assert_close(rew, obs[:, 0])
    torch.testing.assert_close(nxt[:, 0], obs[:, 0] + 1)
    torch.testing.assert_close(done, (obs[:, 0] == 4).float())
    torch.testing.assert_close(act[:, 0], 0.1 * obs[:, 0])


# --------------------------------------------------------------------------------------------- the loop


def test_train_sac_runs_acts_in_the_box_and_is_seeded():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    agent = sac.train_sac("Pendulum-v1", TINY, seed=3, progress=False)
    assert torch.rand(1) == before  # the caller's torch RNG is left as it was
    again = sac.train_sac("Pendulum-v1", TINY, seed=3, progress=False)
    for p, q in zip(agent.parameters(), again.parameters()):
        torch.testing.assert_close(p, q)
    assert len(agent.episode_returns) == 0  # 150 steps: Pendulum's first episode (200 steps) has not ended
    obs = np.array([1.0, 0.0, 0.5], np.float32)
    one = agent.act(obs)
    assert one.shape == (1,) and one.dtype == np.float32 and -2 <= one[0] <= 2
    np.testing.assert_array_equal(one, agent.act(obs))  # deterministic: tanh(μ)
    many = agent.act(np.stack([obs] * 5), deterministic=False)
    assert many.shape == (5, 1) and np.all(np.abs(many) <= 2)
    assert agent.target_entropy == -1.0 and agent.alpha.item() != 1.0  # α has moved from its start


def test_huge_learning_rate_diverges_naming_the_series():
    seen = []

    def check(step, loss, series):
        seen.append(series)
        from labkit.core.training import check_finite

        check_finite(loss, step, series)

    config = sac.SACConfig(steps=400, start_steps=20, batch_size=16, hidden=(16,), lr=1e12)
    with pytest.raises(DivergenceError, match=r"step \d+ in 'SAC (critic|actor|temperature)'"):
        sac.train_sac("Pendulum-v1", config, seed=0, progress=False, on_step=check)
    assert seen[:3] == ["SAC critic", "SAC actor", "SAC temperature"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="Box"):
        sac.train_sac("CartPole-v1", TINY, progress=False)
    with pytest.raises(ValueError, match="unknown environment"):
        sac.train_sac("NoSuchEnv-v0", TINY, progress=False)
    with pytest.raises(ValueError, match="SACConfig"):
        sac.train_sac("Pendulum-v1", {"steps": 10}, progress=False)
    with pytest.raises(ValueError, match="tau"):
        sac.SACConfig(tau=0.0)
    with pytest.raises(ValueError, match="buffer_size"):
        sac.SACConfig(buffer_size=10, batch_size=256)
    with pytest.raises(ValueError, match="hidden"):
        sac.SACConfig(hidden=())


# --------------------------------------------------------------------------------------------- the cached expert


def test_cached_expert_round_trip_and_a_damaged_file_is_retrained(tmp_path, monkeypatch):
    calls = []
    real_train = sac.train_sac

    def counting_train(*args, **kwargs):
        calls.append(args[0])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(sac, "train_sac", counting_train)
    obs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]], np.float32)
    expert = sac.sac_expert("Pendulum-v1", seed=1, config=TINY, cache_dir=tmp_path, progress=False)
    path = sac.expert_path("Pendulum-v1", TINY, 1, tmp_path)
    assert path.exists() and path.parent.name == "sac" and len(calls) == 1
    first = expert(obs)
    assert math.isfinite(rl.run_episode(rl.make_env("Pendulum-v1"), expert, seed=0))  # an obs -> action callable
    # read back, not retrained, same actions
    np.testing.assert_array_equal(sac.sac_expert("Pendulum-v1", seed=1, config=TINY, cache_dir=tmp_path)(obs), first)
    assert len(calls) == 1
    # another seed or budget is another file
    assert sac.expert_path("Pendulum-v1", TINY, 2, tmp_path) != path
    assert sac.expert_path("Pendulum-v1", TINY, 1, tmp_path) != sac.expert_path("Pendulum-v1", sac.SACConfig(), 1)
    # one flipped byte in the tensors' data: the digest catches it, the expert is retrained (same seed: same actor)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="damaged"):
        rebuilt = sac.sac_expert("Pendulum-v1", seed=1, config=TINY, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2
    np.testing.assert_array_equal(rebuilt(obs), first)
    # a truncated file (a crash mid-copy, a full disk) is rebuilt as well
    path.write_bytes(path.read_bytes()[:50])
    with pytest.warns(UserWarning, match="damaged"):
        sac.sac_expert("Pendulum-v1", seed=1, config=TINY, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3
    sac.load_actor(path, sac.cache_key("Pendulum-v1", TINY, 1), TINY.hidden)  # whole again
    with pytest.raises(sac.DamagedExpert, match="another env"):
        sac.load_actor(path, sac.cache_key("Pendulum-v1", TINY, 2), TINY.hidden)
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind


def test_expert_for_mujoco_routes_to_the_cached_sac_expert(monkeypatch):
    asked = []
    monkeypatch.setattr(sac, "sac_expert", lambda name: asked.append(name) or (lambda obs: 2 * obs))
    expert = rl.expert_for("Hopper-v5")
    assert asked == []  # nothing is read or trained until an action is asked for (a random behaviour never asks)
    assert expert(np.array([1.0, 2.0])).tolist() == [2.0, 4.0] and expert(np.array([3.0])).tolist() == [6.0]
    assert asked == ["Hopper-v5"]  # fetched once
    assert rl.expert_for("Pendulum-v1") is rl.pendulum_expert  # classic control keeps its scripted expert
    assert set(sac.DEFAULT_CONFIGS) >= set(rl.MUJOCO)


def test_mujoco_expert_without_mujoco_says_what_to_install(tmp_path):
    try:
        import mujoco  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("mujoco is installed: the first call would train for hours")
    with pytest.raises(ImportError, match="MuJoCo"):
        sac.sac_expert("Hopper-v5", cache_dir=tmp_path, progress=False)


# --------------------------------------------------------------------------------------------- against SB3 (slow)


@pytest.mark.slow
def test_sac_matches_stable_baselines3_on_pendulum():
    """Same budget (6000 env steps, the first 1000 uniformly random), MLPs (64, 64) for the actor and each critic,
    Adam 1e-3 for all, batch 256, γ 0.99, τ 0.005, α learned from 1 with H̄ = −1, one update per env step, training
    seeds 0 and 1 for each. Compared: the mean return of the deterministic policies over 2 seeds × 10 episodes
    (random ≈ −1208, the scripted expert ≈ −170). Measured once, one thread: ours −151 (49 s of CPU time for both
    seeds), SB3 −150 (62 s). One seed is not enough: alone, SB3's seed 2 scored −447 (some of its ten episodes
    never swing up) and ours −277 with seed 0 at 8000 steps, so each side averages two training seeds."""
    sb3 = pytest.importorskip("stable_baselines3")
    steps, start, seeds = 6000, 1000, (0, 1)
    config = sac.SACConfig(steps=steps, start_steps=start, batch_size=256, hidden=(64, 64), lr=1e-3)

    def train_sb3(seed):
        model = sb3.SAC(
            "MlpPolicy",
            gym.make("Pendulum-v1"),
            learning_rate=1e-3,
            buffer_size=steps,
            learning_starts=start,
            batch_size=256,
            tau=0.005,
            gamma=0.99,
            train_freq=1,
            gradient_steps=1,
            ent_coef="auto_1.0",
            target_entropy="auto",
            policy_kwargs={"net_arch": [64, 64]},
            seed=seed,
            device="cpu",
        )
        model.learn(steps)
        return lambda obs: model.predict(obs, deterministic=True)[0]

    clock = time.process_time()
    ours = [sac.train_sac("Pendulum-v1", config, seed=s, progress=False) for s in seeds]
    ours_cpu, clock = time.process_time() - clock, time.process_time()
    ref = [train_sb3(s) for s in seeds]
    ref_cpu = time.process_time() - clock
    ours_ret = np.mean(rl.evaluate(ours, "Pendulum-v1", n_episodes=10, seeds=seeds).returns)
    ref_ret = np.mean(rl.evaluate(ref, "Pendulum-v1", n_episodes=10, seeds=seeds).returns)
    print(f"Pendulum SAC: ours {ours_ret:.0f} ({ours_cpu:.0f} s CPU), SB3 {ref_ret:.0f} ({ref_cpu:.0f} s CPU)")
    assert ours_ret > -400 and ref_ret > -400
    assert abs(ours_ret - ref_ret) < 150

"""Soft Actor-Critic (Haarnoja et al. 2018, arXiv 1812.05905), small and in one place: the online reference agent of
the RL substrate, and the cached expert of the MuJoCo tasks (:func:`sac_expert`, used by
:func:`labkit.substrates.rl.expert_for`). Gymnasium environments with a ``Box`` action space only.

SAC maximises the return plus the policy's entropy, E[Σ_t γ^t (r_t + α·H(π(·|s_t)))], with

    twin soft Q-functions Q_1, Q_2 and their Polyak-averaged targets Q̄_1, Q̄_2 (the min of two fights over-estimation)
    a tanh-squashed Gaussian policy   u ~ N(μ_φ(s), σ_φ(s)²),  a = tanh(u)  (in [−1, 1]ᵈ, then scaled to the box)
    log π(a|s) = log N(u; μ, σ²) − Σ_j log(1 − tanh²(u_j))                               (change of variables)

    soft Bellman target   y = r + γ(1 − d)·(min_i Q̄_i(s', a') − α·log π(a'|s')),   a' ~ π(·|s')
    critic loss           J_Q = Σ_i ½·E[(Q_i(s, a) − y)²]
    actor loss            J_π = E[α·log π(ã|s) − min_i Q_i(s, ã)],   ã ~ π(·|s) reparameterised
    temperature loss      J(α) = E[−α·(log π(ã|s) + H̄)],   target entropy H̄ = −dim(A)   (α learned through log α)
    target update         θ̄ ← τ·θ + (1 − τ)·θ̄

Actions live in [−1, 1]ᵈ inside the agent (the replay buffer, the critics, log π and the entropy target all use
these units, as the paper's code and stable-baselines3 do) and are scaled to the env's box only when they are sent
to the env. A transition that ends by the time limit (truncated) bootstraps from s'; a terminal one does not.

Checked in tests/test_sac.py: each rule by hand (the log-prob correction against torch's TanhTransform), and the
whole loop against stable-baselines3's SAC on Pendulum-v1 (same step budget and hyper-parameters, comparable
returns; SB3 is a test-only reference).

The cached expert (:func:`sac_expert`) trains once and keeps the actor's weights as safetensors in
``<cache>/sac/`` (``<cache>`` as in :func:`labkit.substrates.rl.cache_root`: ``$LABKIT_CACHE`` or
``~/.cache/labkit``), keyed by env, config and seed; a damaged file is warned about and retrained. Default budgets
(:data:`DEFAULT_CONFIGS`): Hopper-v5, Walker2d-v5 and HalfCheetah-v5 1M env steps each (10k random start steps, MLPs
(256, 256), Adam 3e-4, batch 256: the paper's settings), sized for one GPU or a long CPU run, paid once per cache;
Pendulum-v1 6000 steps (~35 s of CPU). The tests never run MuJoCo (the ``mujoco`` package is optional).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: bump when the actor's layout or the training loop changes: every cached expert is then retrained
FORMAT_VERSION = 1

#: log σ is clamped to this range (the paper's code and SB3 use the same), so σ ∈ [2e-9, 7.4]
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

# --------------------------------------------------------------------------------------------- knobs


@dataclass(frozen=True)
class SACConfig:
    """The knobs of :func:`train_sac` (defaults: the paper's Table 1, Haarnoja et al. 2018, except the budget)."""

    steps: int = 20_000  # environment steps (one gradient update per step once start_steps are collected)
    start_steps: int = 1_000  # uniformly random actions first (fills the buffer; no updates before)
    batch_size: int = 256  # transitions per gradient update
    buffer_size: int = 1_000_000  # replay capacity (the oldest transition is overwritten when full)
    hidden: tuple[int, ...] = (256, 256)  # ReLU MLP widths of the actor and of each critic
    lr: float = 3e-4  # Adam learning rate of the actor, the critics and log α
    gamma: float = 0.99  # discount γ
    tau: float = 0.005  # Polyak rate τ of the target critics
    init_alpha: float = 1.0  # the temperature α before learning
    target_entropy: float | None = None  # H̄; None: −dim(A), the paper's heuristic

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.steps < 1 or self.batch_size < 1 or self.start_steps < 0:
            raise ValueError("steps and batch_size must be ≥ 1 and start_steps ≥ 0")
        if self.buffer_size < self.batch_size:
            raise ValueError(f"buffer_size ({self.buffer_size}) must hold at least one batch ({self.batch_size})")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden needs at least one layer of width ≥ 1, got {self.hidden}")
        if not (self.lr > 0 and 0 <= self.gamma <= 1 and 0 < self.tau <= 1 and self.init_alpha > 0):
            raise ValueError("need lr > 0, 0 ≤ gamma ≤ 1, 0 < tau ≤ 1 and init_alpha > 0")


#: the default budgets of the cached experts (:func:`sac_expert`). MuJoCo: the paper's 1M steps with RL Zoo's
#: 10k random start steps, sized for one GPU or a long CPU run (hours; not measured here, where MuJoCo is absent).
#: Pendulum: small nets and lr 1e-3 pass the scripted expert (−170) in ~35 s of CPU on one thread (measured: the
#: deterministic policy's mean return over 10 episodes −134, −132, −132 for seeds 0, 1, 2).
DEFAULT_CONFIGS: dict[str, SACConfig] = {
    "Hopper-v5": SACConfig(steps=1_000_000, start_steps=10_000),
    "Walker2d-v5": SACConfig(steps=1_000_000, start_steps=10_000),
    "HalfCheetah-v5": SACConfig(steps=1_000_000, start_steps=10_000),
    "Pendulum-v1": SACConfig(steps=6_000, start_steps=1_000, hidden=(64, 64), lr=1e-3),
}

# --------------------------------------------------------------------------------------------- the rules


def squashed_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log π(a|s) of a = tanh(u), u ~ N(mean, exp(log_std)²); ``u``, ``mean``, ``log_std`` ``(B, d)`` → ``(B,)``."""
    # log N(u; μ, σ²) summed over the d independent dimensions
    gauss = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1)
    # log(1 − tanh²u) = 2·(log 2 − u − softplus(−2u)), the same value without 1 − tanh² rounding to 0 for large |u|
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    # log π(a|s) = log N(u; μ, σ²) − Σ_j log(1 − tanh²(u_j))
    return gauss - log_det.sum(-1)


def soft_q_target(
    reward: torch.Tensor,
    done: torch.Tensor,
    next_q1: torch.Tensor,
    next_q2: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: torch.Tensor | float,
    gamma: float,
) -> torch.Tensor:
    """The soft Bellman target, every argument ``(B,)`` (``done`` 1.0 for a terminal s', 0.0 otherwise)."""
    # V̄(s') = min_i Q̄_i(s', a') − α·log π(a'|s'),   a' ~ π(·|s')
    soft_value = torch.minimum(next_q1, next_q2) - alpha * next_log_prob
    # y = r + γ(1 − d)·V̄(s')
    return reward + gamma * (1.0 - done) * soft_value


def critic_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """J_Q for both critics; ``q1``, ``q2`` ``(B,)`` at the buffer's (s, a), ``target`` ``(B,)`` (no gradient)."""
    # J_Q = Σ_i ½·E[(Q_i(s, a) − y)²]
    return 0.5 * ((q1 - target).pow(2).mean() + (q2 - target).pow(2).mean())


def actor_loss(log_prob: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """J_π; ``log_prob``, ``q1``, ``q2`` ``(B,)`` at the policy's own reparameterised action ã."""
    # J_π = E[α·log π(ã|s) − min_i Q_i(s, ã)]
    return (alpha * log_prob - torch.minimum(q1, q2)).mean()


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """J(α) through log α (a scalar parameter); ``log_prob`` ``(B,)`` (no gradient). When the policy's entropy
    −log π is below H̄, (log π + H̄) > 0 and descending the loss raises α; above H̄ it lowers α."""
    # J(α) = E[−α·(log π(ã|s) + H̄)], written with log α (same sign of the gradient, α > 0 for free)
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


@torch.no_grad()
def polyak_update(net: nn.Module, target: nn.Module, tau: float) -> None:
    """Move every target parameter towards the online one."""
    for p, p_target in zip(net.parameters(), target.parameters()):
        # θ̄ ← τ·θ + (1 − τ)·θ̄
        p_target.mul_(1.0 - tau).add_(p, alpha=tau)


# --------------------------------------------------------------------------------------------- the networks


def _mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    from labkit.models.mlp import MLP

    return MLP(in_dim, list(hidden), out_dim)


class SquashedGaussianActor(nn.Module):
    """π_φ(·|s): an MLP gives (μ, log σ) ``(B, d)`` each; u ~ N(μ, σ²), a = tanh(u) ∈ [−1, 1]ᵈ. The action box
    (``low``, ``high``, buffers saved with the weights) maps a to the env's units only in :meth:`act`."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], low, high):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.net = _mlp(obs_dim, hidden, 2 * act_dim)
        self.register_buffer("low", torch.as_tensor(np.asarray(low), dtype=torch.float32).reshape(act_dim))
        self.register_buffer("high", torch.as_tensor(np.asarray(high), dtype=torch.float32).reshape(act_dim))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs`` ``(B, obs_dim)`` → (μ, log σ), each ``(B, d)``, log σ clamped to [LOG_STD_MIN, LOG_STD_MAX]."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None):
        """A reparameterised draw: (a ``(B, d)`` in [−1, 1], log π(a|s) ``(B,)``); gradients flow through a."""
        mean, log_std = self(obs)
        # u = μ + σ·ε,  ε ~ N(0, I): the reparameterisation trick, so ∂J_π/∂φ passes through the sample
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + log_std.exp() * eps
        return torch.tanh(u), squashed_log_prob(u, mean, log_std)

    def to_env(self, a: torch.Tensor) -> torch.Tensor:
        """[−1, 1]ᵈ → [low, high]:  a_env = low + (a + 1)/2·(high − low)."""
        return self.low + (a + 1.0) * 0.5 * (self.high - self.low)

    @torch.no_grad()
    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        """The env action for ONE observation ``(obs_dim,)`` → ``(d,)`` or a batch ``(B, obs_dim)`` → ``(B, d)``,
        float32 numpy in the env's box; deterministic: tanh(μ), else a draw of the policy."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.low.device)
        single = x.ndim == 1
        x = x.reshape(1 if single else x.shape[0], self.obs_dim)
        a = torch.tanh(self(x)[0]) if deterministic else self.sample(x)[0]
        out = self.to_env(a).cpu().numpy()
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"SquashedGaussianActor(obs_dim={self.obs_dim}, act_dim={self.act_dim})"


class TwinQ(nn.Module):
    """Two independent critics Q_1, Q_2: (s ``(B, obs_dim)``, a ``(B, d)`` in [−1, 1]) → ``(B,)`` each."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.q1, self.q2 = _mlp(obs_dim + act_dim, hidden, 1), _mlp(obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class SACAgent(nn.Module):
    """The actor, the twin critics, their targets and log α. ``act(obs, deterministic=True)`` returns the env
    action as numpy, so ``agent.act`` is an ``obs -> action`` expert for :func:`labkit.substrates.rl.collect_dataset`
    (and :func:`labkit.substrates.rl.evaluate` takes the agent itself). ``episode_returns`` / ``episode_ends``: the
    training episodes' returns and the env step at which each ended."""

    def __init__(self, obs_dim: int, act_dim: int, low, high, config: SACConfig):
        super().__init__()
        self.config = config
        self.actor = SquashedGaussianActor(obs_dim, act_dim, config.hidden, low, high)
        self.critic = TwinQ(obs_dim, act_dim, config.hidden)
        self.critic_target = TwinQ(obs_dim, act_dim, config.hidden)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.init_alpha)))
        # H̄ = −dim(A) unless the config names one
        self.target_entropy = float(-act_dim if config.target_entropy is None else config.target_entropy)
        self.episode_returns: list[float] = []
        self.episode_ends: list[int] = []

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        return self.actor.act(obs, deterministic)


# --------------------------------------------------------------------------------------------- replay


class ReplayBuffer:
    """A ring of the last ``capacity`` transitions (numpy, float32): s, a (in [−1, 1]), r, s', and d = 1.0 when s'
    is terminal (a time-limit cut keeps d = 0 and bootstraps). ``sample`` draws uniformly with replacement."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity, self.size, self.next = int(capacity), 0, 0
        self.obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.actions = np.zeros((self.capacity, act_dim), np.float32)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.dones = np.zeros(self.capacity, np.float32)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward: float, next_obs, terminal: bool) -> None:
        i = self.next
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.dones[i] = next_obs, float(terminal)
        self.next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator, device=None) -> tuple[torch.Tensor, ...]:
        """(s ``(B, obs_dim)``, a ``(B, d)``, r ``(B,)``, s' ``(B, obs_dim)``, d ``(B,)``) as tensors."""
        idx = rng.integers(self.size, size=batch_size)
        cols = (self.obs, self.actions, self.rewards, self.next_obs, self.dones)
        return tuple(torch.as_tensor(c[idx], device=device) for c in cols)


# --------------------------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class SACLosses:
    """The three losses of one update and α after it (floats, for logging)."""

    critic: float
    actor: float
    temperature: float
    alpha: float


def sac_update(
    agent: SACAgent,
    batch: tuple[torch.Tensor, ...],
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer, torch.optim.Optimizer],
    step: int,
    check: Callable[[int, torch.Tensor, str], None],
) -> SACLosses:
    """One gradient step of SAC on a batch (s, a, r, s', d): critics, then actor, then α, then the targets."""
    cfg = agent.config
    obs, action, reward, next_obs, done = batch
    opt_critic, opt_actor, opt_alpha = optimizers
    alpha = agent.alpha.detach()

    # 1. critics: regress both Q_i(s, a) on the soft Bellman target y (a fresh a' ~ π(·|s'), target critics)
    with torch.no_grad():
        next_action, next_log_prob = agent.actor.sample(next_obs)
        target = soft_q_target(
            reward, done, *agent.critic_target(next_obs, next_action), next_log_prob, alpha, cfg.gamma
        )
    loss_q = critic_loss(*agent.critic(obs, action), target)
    check(step, loss_q, "SAC critic")
    opt_critic.zero_grad()
    loss_q.backward()
    opt_critic.step()

    # 2. actor: a reparameterised ã ~ π(·|s) scored by the (just updated) critics, whose weights it does not move
    new_action, log_prob = agent.actor.sample(obs)
    q1, q2 = agent.critic(obs, new_action)
    loss_pi = actor_loss(log_prob, q1, q2, alpha)
    check(step, loss_pi, "SAC actor")
    opt_actor.zero_grad()
    loss_pi.backward()
    opt_actor.step()

    # 3. temperature: α grows when the policy's entropy is below H̄ and shrinks above it
    loss_alpha = temperature_loss(agent.log_alpha, log_prob, agent.target_entropy)
    check(step, loss_alpha, "SAC temperature")
    opt_alpha.zero_grad()
    loss_alpha.backward()
    opt_alpha.step()

    # 4. targets: θ̄ ← τ·θ + (1 − τ)·θ̄
    polyak_update(agent.critic, agent.critic_target, cfg.tau)
    with torch.no_grad():
        return SACLosses(float(loss_q), float(loss_pi), float(loss_alpha), float(agent.alpha))


def _box_dims(env) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(obs_dim, act_dim, low, high) of a gymnasium env with Box spaces, or a ValueError saying what is wrong."""
    from gymnasium import spaces

    name = env.spec.id if getattr(env, "spec", None) is not None else type(env).__name__
    if not isinstance(env.action_space, spaces.Box):
        raise ValueError(f"SAC needs a continuous (Box) action space; {name} has {env.action_space}")
    if not isinstance(env.observation_space, spaces.Box):
        raise ValueError(f"SAC needs a vector (Box) observation space; {name} has {env.observation_space}")
    low = np.asarray(env.action_space.low, np.float32).reshape(-1)
    high = np.asarray(env.action_space.high, np.float32).reshape(-1)
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
        raise ValueError(f"SAC squashes actions into a bounded box; {name}'s action bounds are {low} … {high}")
    return int(np.prod(env.observation_space.shape)), len(low), low, high


def train_sac(
    env_name_or_env,
    config: SACConfig = SACConfig(),  # noqa: B008 - frozen dataclass, never mutated
    seed: int = 0,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    on_step: Callable[[int, torch.Tensor, str], None] | None = None,
    check_every: int = 1000,
) -> SACAgent:
    """Train SAC online for ``config.steps`` env steps on a gymnasium env (an id for
    :func:`labkit.substrates.rl.make_env`, or an env instance) and return the agent (eval mode).

    ``start_steps`` uniformly random actions first, then one update (:func:`sac_update`) per env step. ``seed``
    fixes the first reset, the random actions, the minibatches and (inside, without touching the caller's torch
    RNG) the initial weights and the policy's noise. ``on_step(step, loss, series)`` sees every loss (default:
    ``DivergenceError`` on NaN/inf, naming the step and ``"SAC critic"`` / ``"SAC actor"`` / ``"SAC
    temperature"``; a method passes ``lambda step, loss, series: ctx.check(loss, step, series)``); the weights are
    checked every ``check_every`` steps and at the end (``DivergenceError`` beyond 1e6 or NaN)."""
    from labkit.core.training import check_finite, check_weights
    from labkit.core.training import progress as bar
    from labkit.substrates import rl

    if not isinstance(config, SACConfig):
        raise ValueError(f"config must be a SACConfig, got {type(config).__name__}")
    env = rl.make_env(env_name_or_env) if isinstance(env_name_or_env, str) else env_name_or_env
    obs_dim, act_dim, low, high = _box_dims(env)
    device = torch.device(device)
    check = on_step or (lambda step, loss, series: check_finite(loss, step, series))
    rng = np.random.default_rng(seed)
    name = env.spec.id if getattr(env, "spec", None) is not None else "env"

    # the seed fixes the initial weights and the policy's noise without touching the caller's RNG streams
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []))
        if isinstance(env_name_or_env, str):
            stack.callback(env.close)  # an env we made is ours to close
        torch.manual_seed(seed)
        agent = SACAgent(obs_dim, act_dim, low, high, config).to(device)
        optimizers = (
            torch.optim.Adam(agent.critic.parameters(), lr=config.lr),
            torch.optim.Adam(agent.actor.parameters(), lr=config.lr),
            torch.optim.Adam([agent.log_alpha], lr=config.lr),
        )
        buffer = ReplayBuffer(min(config.buffer_size, config.steps), obs_dim, act_dim)
        obs, _ = env.reset(seed=int(seed))
        obs = np.asarray(obs, np.float32).reshape(obs_dim)
        episode_return = 0.0
        pbar = stack.enter_context(bar(total=config.steps, desc=f"SAC {name}", enabled=progress))
        for step in range(config.steps):
            # act: uniform in [−1, 1]ᵈ while filling the buffer, then a draw of the current policy
            if step < config.start_steps:
                action = rng.uniform(-1.0, 1.0, act_dim).astype(np.float32)
            else:
                with torch.no_grad():
                    x = torch.as_tensor(obs, device=device)[None]
                    action = agent.actor.sample(x)[0][0].cpu().numpy()
            # a_env = low + (a + 1)/2·(high − low)
            env_action = low + (action + 1.0) * 0.5 * (high - low)
            next_obs, reward, terminated, truncated, _ = env.step(env_action)
            next_obs = np.asarray(next_obs, np.float32).reshape(obs_dim)
            buffer.add(obs, action, float(reward), next_obs, bool(terminated))
            episode_return += float(reward)
            obs = next_obs
            if terminated or truncated:
                agent.episode_returns.append(episode_return)
                agent.episode_ends.append(step + 1)
                shown = {"episode_return": f"{episode_return:.1f}", "alpha": f"{agent.alpha.item():.3f}"}
                pbar.set_postfix(shown, refresh=False)
                episode_return = 0.0
                obs = np.asarray(env.reset()[0], np.float32).reshape(obs_dim)
            # learn: one update per env step once the random phase has filled the buffer
            if step >= config.start_steps and len(buffer) >= config.batch_size:
                batch = buffer.sample(config.batch_size, rng, device)
                sac_update(agent, batch, optimizers, step, check)
                if (step + 1) % check_every == 0:
                    check_weights([agent.actor, agent.critic, agent.log_alpha], step, "SAC")
            pbar.update(1)
    check_weights([agent.actor, agent.critic, agent.log_alpha], config.steps, "SAC")
    return agent.eval()


# --------------------------------------------------------------------------------------------- the cached expert


class DamagedExpert(Exception):
    """A cached expert's file is missing, unreadable, written for another key, misshapen or not finite."""


def cache_key(env_name: str, config: SACConfig, seed: int) -> str:
    """sha256 of (format, env, every knob, seed): the file name's key and the file's own metadata."""
    blob = json.dumps(
        {"format": FORMAT_VERSION, "env": env_name, "config": dataclasses.asdict(config), "seed": int(seed)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def expert_path(env_name: str, config: SACConfig, seed: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/sac/<env>-seed<seed>-<key[:16]>.safetensors`` (``<cache>``: rl's cache root, beside ``minari/``)."""
    from labkit.substrates import rl

    safe = re.sub(r"[^-\w]", "_", env_name)
    return (
        rl.cache_root(cache_dir).parent
        / "sac"
        / f"{safe}-seed{seed}-{cache_key(env_name, config, seed)[:16]}.safetensors"
    )


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names and bytes in name order (safetensors itself has no checksum)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_actor(actor: SquashedGaussianActor, path: Path, key: str) -> None:
    """Write the actor's state as safetensors (metadata: the key, the dims, a digest), atomically: a temporary file
    in the same folder, flushed, then ``os.replace`` over ``path``."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in actor.state_dict().items()}
    meta = {"labkit_key": key, "obs_dim": str(actor.obs_dim), "act_dim": str(actor.act_dim)}
    data = save(tensors, metadata={**meta, "sha256": _tensor_digest(tensors)})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp made it private; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_actor(path: Path, key: str, hidden: Sequence[int]) -> SquashedGaussianActor:
    """The actor stored at ``path`` after checking its key, digest, tensor names and shapes, and finiteness;
    ``DamagedExpert`` says what is wrong."""
    from safetensors.torch import load

    try:
        data = path.read_bytes()  # read once: the tensors and the metadata come from the same bytes
        tensors = load(data)
        # the safetensors layout: an 8-byte little-endian header length, then a JSON header with "__metadata__"
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except Exception as err:  # OSError, or safetensors' own errors on a bad header or short data
        raise DamagedExpert(f"it is missing or not a readable safetensors file ({err})") from None
    if meta.get("labkit_key") != key:
        raise DamagedExpert("it was written for another env, config or seed")
    if meta.get("sha256") != _tensor_digest(tensors):
        raise DamagedExpert("its tensors do not match their recorded sha256")
    try:
        obs_dim, act_dim = int(meta["obs_dim"]), int(meta["act_dim"])
    except (KeyError, ValueError):
        raise DamagedExpert("its metadata lacks the actor's dimensions") from None
    actor = SquashedGaussianActor(obs_dim, act_dim, hidden, np.zeros(act_dim), np.ones(act_dim))
    expected = {k: tuple(v.shape) for k, v in actor.state_dict().items()}
    if {k: tuple(v.shape) for k, v in tensors.items()} != expected:
        raise DamagedExpert("its tensors do not fit the actor")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise DamagedExpert("it holds NaN or infinite values")
    actor.load_state_dict(tensors, strict=True)
    return actor.eval()


def sac_expert(
    name: str,
    steps: int | None = None,
    seed: int = 0,
    *,
    config: SACConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> Callable[[np.ndarray], np.ndarray]:
    """The deterministic ``obs -> action`` of a SAC actor trained on ``name`` (``actor.act``, on the CPU).

    ``config`` defaults to :data:`DEFAULT_CONFIGS` [name] (else ``SACConfig()``), ``steps`` replaces its budget.
    The first call trains (:func:`train_sac` on ``device``, a progress bar when ``progress``) and stores the
    actor in the cache (:func:`expert_path`); later calls read it back. Writers hold a lock; a damaged file is
    warned about and retrained."""
    from labkit.substrates import rl

    config = config or DEFAULT_CONFIGS.get(name, SACConfig())
    if steps is not None:
        config = dataclasses.replace(config, steps=int(steps))
    key = cache_key(name, config, seed)
    path = expert_path(name, config, seed, cache_dir)
    with contextlib.suppress(DamagedExpert):  # fast path, no lock: os.replace never shows half a file
        return load_actor(path, key, config.hidden).act
    with contextlib.ExitStack() as stack:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(rl._exclusive(path.with_suffix(".lock")))
        except OSError as err:
            warnings.warn(f"cannot use the cache folder {path.parent} ({err}); training without storing", stacklevel=2)
            return train_sac(name, config, seed, progress=progress, device=device).actor.cpu().act
        if path.exists():
            try:  # another process may have written it while we waited for the lock
                return load_actor(path, key, config.hidden).act
            except DamagedExpert as err:
                warnings.warn(f"the cached SAC expert {path} is damaged: {err}; training it again", stacklevel=2)
        actor = train_sac(name, config, seed, progress=progress, device=device).actor.cpu()
        try:
            save_actor(actor, path, key)
        except OSError as err:
            warnings.warn(f"cannot store the SAC expert in {path.parent} ({err})", stacklevel=2)
    return actor.act

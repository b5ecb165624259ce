"""The offline-RL substrate: one data record, environments, behaviour data written with Minari, small reference agents,
and evaluation with D4RL's normalised return. Shared by LaMo (05), AILBoost (21) and Dual RL (29); the exact tabular
world is :mod:`labkit.substrates.gridworld`.

Data. :class:`OfflineDataset` holds flat transition arrays, episode after episode (``episode_offsets`` marks where
each starts), whatever made them: :func:`labkit.substrates.gridworld.rollouts` (exact tabular world, vectorised),
:func:`collect_dataset` (any environment below, written as a local Minari data set and cached), or
:func:`from_minari` (a Minari data set already on disk). Nothing is downloaded. The kit writes with
``minari.create_dataset_from_buffers`` (the format ``DataCollector`` writes; DataCollector itself needs jax,
``minari[create]``, which the kit does not install).

Environments (:func:`make_env`, each built by ``gymnasium.make`` and seeded once):

    CartPole-v1, Acrobot-v1, Pendulum-v1       gymnasium classic control
    labkit/CartPoleSparse-v1                   CartPole whose only reward comes at the end: steps survived / 500
    labkit/GridWorld8x8-v0, labkit/GridWorld7x7-v0   the slippery gridworlds (Discrete spaces)
    Hopper-v5, Walker2d-v5, HalfCheetah-v5     MuJoCo (the full preset; needs ``pip install "gymnasium[mujoco]"``)

Behaviour policies (:class:`Behaviour`) come from a scripted EXPERT per environment (no training needed: a linear
controller balances CartPole for 500 steps, torque along the second joint's velocity swings Acrobot up, energy
pumping plus a PD controller holds Pendulum up; the value-iteration policy on the grids), made ε-noisy or mixed
per episode with a uniformly random policy. MuJoCo has no scripted expert: its expert is a Soft Actor-Critic actor
trained once and cached (:func:`labkit.substrates.sac.sac_expert`, weights in ``<cache>/sac/``). The default budget
is the SAC paper's 1M env steps for each of Hopper-v5, Walker2d-v5 and HalfCheetah-v5 (10k random start steps, MLPs
(256, 256), Adam 3e-4, batch 256): sized for one GPU or a long CPU run (hours), paid once per cache.

Normalised return (D4RL):  score = 100·(R − R_random)/(R_expert − R_random), with the references of
:data:`REFERENCE_SCORES` (measured by :func:`measure_reference` over 100 seeded episodes; exact on the grids; D4RL's
published numbers for MuJoCo). :func:`evaluate` returns the mean over seeds with a 95% Student-t interval.

Reference agents (torch, one place): behaviour cloning for discrete and continuous actions (:func:`train_bc`) and
IQL (:func:`train_iql`, Kostrikov et al. 2021), checked against d3rlpy on the same data in tests/test_rl_substrate.py;
online SAC (:mod:`labkit.substrates.sac`), checked against stable-baselines3's SAC in tests/test_sac.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: bump when the collection loop or the record changes: every cached data set is then rebuilt
FORMAT_VERSION = 1

# --------------------------------------------------------------------------------------------- the data record


@dataclass(frozen=True, eq=False)
class OfflineDataset:
    """Flat transitions, episode after episode. N steps, E episodes; episode i is ``[offsets[i], offsets[i+1])``.

    observations       (N, *obs_shape)  float32 (or int64 state indices for the tabular grid, shape (N,))
    actions            (N,) int64 for discrete actions, (N, act_dim) float32 for continuous
    rewards            (N,) float32
    next_observations  (N, *obs_shape)
    terminals          (N,) bool    the episode ended in a terminal state (bootstrap with V = 0)
    truncations        (N,) bool    the episode was cut by the time limit (bootstrap from next_observations)
    episode_offsets    (E + 1,) int64, 0 … N

    Each episode's last step is terminal or truncated, and no other step is."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    truncations: np.ndarray
    episode_offsets: np.ndarray
    env_id: str = ""
    behaviour: str = ""

    def __post_init__(self):
        n = len(self.observations)
        for name in ("actions", "rewards", "next_observations", "terminals", "truncations"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, observations {n}")
        if self.next_observations.shape != self.observations.shape:
            raise ValueError("next_observations must have the shape of observations")
        off = np.asarray(self.episode_offsets, dtype=np.int64)
        if off.ndim != 1 or len(off) < 1 or off[0] != 0 or off[-1] != n or (np.diff(off) <= 0).any():
            raise ValueError(f"episode_offsets must rise strictly from 0 to N = {n}, got {off[:5]}…")
        object.__setattr__(self, "episode_offsets", off)
        ends = np.zeros(n, dtype=bool)
        ends[off[1:] - 1] = True
        flagged = np.asarray(self.terminals, bool) | np.asarray(self.truncations, bool)
        if (flagged != ends).any():
            raise ValueError("every episode's last step (and only it) must be terminal or truncated")

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_offsets) - 1

    @property
    def discrete(self) -> bool:
        """True when actions are integer indices."""
        return np.issubdtype(self.actions.dtype, np.integer)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.episode_offsets)

    @property
    def episode_index(self) -> np.ndarray:
        """``(N,)`` the episode each step belongs to."""
        return np.repeat(np.arange(self.n_episodes), self.episode_lengths)

    @property
    def timesteps(self) -> np.ndarray:
        """``(N,)`` t within the episode (0 at each episode's first step)."""
        return np.arange(len(self)) - np.repeat(self.episode_offsets[:-1], self.episode_lengths)

    def episode_returns(self, gamma: float = 1.0) -> np.ndarray:
        """``(E,)`` Σ_t γ^t r_t of each episode (float64)."""
        disc = np.power(gamma, self.timesteps.astype(np.float64))
        return np.bincount(self.episode_index, weights=disc * self.rewards, minlength=self.n_episodes)

    def returns_to_go(self, gamma: float = 1.0) -> np.ndarray:
        """``(N,)`` R̂_t = Σ_{t' ≥ t} γ^{t'−t} r_t' within the episode (a Decision Transformer's conditioning)."""
        out = np.zeros(len(self), dtype=np.float64)
        for i in range(self.n_episodes):
            lo, hi = self.episode_offsets[i], self.episode_offsets[i + 1]
            acc = 0.0
            for t in range(hi - 1, lo - 1, -1):
                acc = float(self.rewards[t]) + gamma * acc
                out[t] = acc
        return out

    def select_episodes(self, indices) -> OfflineDataset:
        """The episodes at ``indices`` (in that order) as a new record, e.g. a low-data subset."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            raise ValueError("select at least one episode")
        if idx.min() < 0 or idx.max() >= self.n_episodes:
            raise ValueError(f"episode indices must be in [0, {self.n_episodes}), got {idx.min()}…{idx.max()}")
        steps = np.concatenate([np.arange(self.episode_offsets[i], self.episode_offsets[i + 1]) for i in idx])
        lengths = self.episode_lengths[idx]
        return self._take(steps, np.concatenate([[0], np.cumsum(lengths)]))

    def episode(self, i: int) -> OfflineDataset:
        return self.select_episodes([i])

    def _take(self, steps: np.ndarray, offsets: np.ndarray) -> OfflineDataset:
        return OfflineDataset(
            observations=self.observations[steps],
            actions=self.actions[steps],
            rewards=self.rewards[steps],
            next_observations=self.next_observations[steps],
            terminals=self.terminals[steps],
            truncations=self.truncations[steps],
            episode_offsets=offsets,
            env_id=self.env_id,
            behaviour=self.behaviour,
        )

    def state_action_counts(self, n_states: int, n_actions: int) -> np.ndarray:
        """``(S, A)`` float64 visit counts of (observation, action) for integer observations (the tabular grid)."""
        if self.observations.ndim != 1 or not np.issubdtype(self.observations.dtype, np.integer) or not self.discrete:
            raise ValueError("state_action_counts needs integer observations and actions (a tabular data set)")
        flat = self.observations * n_actions + self.actions
        return np.bincount(flat, minlength=n_states * n_actions).reshape(n_states, n_actions).astype(np.float64)

    def summary(self) -> str:
        ret = self.episode_returns()
        return (
            f"{self.env_id or 'data'} [{self.behaviour or '?'}]: {self.n_episodes} episodes, {len(self)} steps, "
            f"return {ret.mean():.3g} ± {ret.std():.2g} (min {ret.min():.3g}, max {ret.max():.3g})"
        )


def concatenate(datasets: Sequence[OfflineDataset], behaviour: str | None = None) -> OfflineDataset:
    """The episodes of several records one after the other (same env, same shapes)."""
    if not datasets:
        raise ValueError("nothing to concatenate")
    shift = np.cumsum([0] + [len(d) for d in datasets[:-1]])
    offsets = np.concatenate([[0]] + [d.episode_offsets[1:] + s for d, s in zip(datasets, shift)])

    def cat(name):
        return np.concatenate([getattr(d, name) for d in datasets])

    return OfflineDataset(
        observations=cat("observations"),
        actions=cat("actions"),
        rewards=cat("rewards"),
        next_observations=cat("next_observations"),
        terminals=cat("terminals"),
        truncations=cat("truncations"),
        episode_offsets=offsets,
        env_id=datasets[0].env_id,
        behaviour=behaviour if behaviour is not None else "+".join(d.behaviour for d in datasets),
    )


# --------------------------------------------------------------------------------------------- environments

CLASSIC = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1")
LABKIT_ENVS = ("labkit/CartPoleSparse-v1", "labkit/GridWorld8x8-v0", "labkit/GridWorld7x7-v0")
MUJOCO = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5")
KNOWN_ENVS = CLASSIC + LABKIT_ENVS + MUJOCO
GRID_PRESETS = {"labkit/GridWorld8x8-v0": "slippery_8x8", "labkit/GridWorld7x7-v0": "lamo_7x7"}
CARTPOLE_MAX_STEPS = 500


@functools.cache
def _sparse_wrapper_class():
    import gymnasium as gym

    class SparseEpisodeReward(gym.Wrapper):
        """Reward 0 at every step except the last, which gets ``scale`` × the episode's summed original reward
        (CartPole: steps survived / 500). Same episodes, same optimal policy, far harder credit assignment."""

        def __init__(self, env, scale: float):
            super().__init__(env)
            self.scale = float(scale)
            self._total = 0.0

        def reset(self, **kwargs):
            self._total = 0.0
            return self.env.reset(**kwargs)

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            self._total += float(reward)
            sparse = self.scale * self._total if (terminated or truncated) else 0.0
            return obs, sparse, terminated, truncated, info

    return SparseEpisodeReward


def __getattr__(name: str):
    # PEP 562: ``labkit.substrates.rl.SparseEpisodeReward`` is built on first use (gymnasium is optional), and the
    # name resolves for gymnasium's wrapper specs (Minari stores "labkit.substrates.rl:SparseEpisodeReward")
    if name == "SparseEpisodeReward":
        return _sparse_wrapper_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sparse_episode_reward(env, scale: float):
    """Wrap ``env`` with :class:`SparseEpisodeReward` (see its docstring)."""
    return _sparse_wrapper_class()(env, scale)


def make_cartpole_sparse(render_mode: str | None = None):
    """Entry point of ``labkit/CartPoleSparse-v1``: CartPole-v1 (500-step limit) with the sparse end reward."""
    import gymnasium as gym

    return sparse_episode_reward(gym.make("CartPole-v1", render_mode=render_mode), 1.0 / CARTPOLE_MAX_STEPS)


def register_envs() -> None:
    """Register the ``labkit/…`` ids with gymnasium (idempotent): Minari records them by id, so a stored data set
    can rebuild its environment with ``recover_environment()``."""
    import gymnasium as gym

    if "labkit/CartPoleSparse-v1" not in gym.registry:
        gym.register("labkit/CartPoleSparse-v1", entry_point="labkit.substrates.rl:make_cartpole_sparse")
    for env_id, preset in GRID_PRESETS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="labkit.substrates.gridworld:make_grid_env", kwargs={"preset": preset})


def make_env(name: str, seed: int | None = None, **kwargs):
    """``gymnasium.make(name, **kwargs)`` for a known id (:data:`KNOWN_ENVS`), seeded once: with ``seed`` the env
    is reset with that seed (later ``reset()`` calls continue its random stream) and its action and observation
    spaces are seeded, so the same seed replays the same episodes. MuJoCo ids need the ``mujoco`` package."""
    import gymnasium as gym

    if name not in KNOWN_ENVS:
        raise ValueError(f"unknown environment {name!r}; known: {', '.join(KNOWN_ENVS)}")
    if name in MUJOCO:
        try:
            import mujoco  # noqa: F401
        except ImportError:
            raise ImportError(
                f"{name} needs MuJoCo (the full preset): pip install 'gymnasium[mujoco]'. "
                f"The quick and standard presets use {', '.join(CLASSIC + LABKIT_ENVS)}."
            ) from None
    register_envs()
    env = gym.make(name, **kwargs)
    if seed is not None:
        env.reset(seed=int(seed))
        env.action_space.seed(int(seed))
        env.observation_space.seed(int(seed))
    return env


def grid_of(env):
    """The :class:`~labkit.substrates.gridworld.GridWorld` behind a grid env (or None for other envs)."""
    return getattr(getattr(env, "unwrapped", env), "mdp", None)


# --------------------------------------------------------------------------------------------- experts, behaviours


def cartpole_expert(obs) -> int:
    """Push right when θ + 0.5·θ̇ + 0.01·x + 0.1·ẋ > 0 (a linear controller): 500 steps from every seed tried."""
    x, x_dot, theta, theta_dot = (float(v) for v in obs)
    return int(theta + 0.5 * theta_dot + 0.01 * x + 0.1 * x_dot > 0)


def acrobot_expert(obs) -> int:
    """Torque +1 when the second joint turns forward, −1 otherwise (pumps energy; ≈ 85 steps to the line)."""
    return 2 if float(obs[5]) > 0 else 0


def pendulum_expert(obs) -> np.ndarray:
    """Energy pumping far from the top, a PD controller near it: u = −(10·θ + 2·θ̇) when cos θ > 0.9."""
    cos, sin, omega = (float(v) for v in obs)
    theta = math.atan2(sin, cos)
    if cos > 0.9:
        u = -(10.0 * theta + 2.0 * omega)
    else:
        energy = 0.5 * omega**2 + 10.0 * (cos - 1.0)  # 0 at rest on top (g = 10, m = l = 1)
        u = 2.0 * math.copysign(1.0, omega) if energy < 0 else -0.5 * omega
    return np.array([min(max(u, -2.0), 2.0)], dtype=np.float32)


def expert_for(env_or_name) -> Callable:
    """The expert ``obs -> action`` of an env (name or instance): scripted for classic control and the grids; for
    MuJoCo the cached SAC actor of :func:`labkit.substrates.sac.sac_expert` (its default 1M-step budget), fetched at
    the first action asked for, so a random behaviour never pays for it; when the cache lacks it, that first call
    trains it (a progress bar that may run for hours). Or pass your own expert to :func:`collect_dataset`."""
    name = env_or_name if isinstance(env_or_name, str) else env_or_name.spec.id
    if name in ("CartPole-v1", "labkit/CartPoleSparse-v1"):
        return cartpole_expert
    if name == "Acrobot-v1":
        return acrobot_expert
    if name == "Pendulum-v1":
        return pendulum_expert
    if name in GRID_PRESETS:
        from labkit.substrates import gridworld as gw

        mdp = grid_of(env_or_name) if not isinstance(env_or_name, str) else gw.PRESETS[GRID_PRESETS[name]]()
        actions = gw.expert_policy(mdp).argmax(1)
        return lambda obs: int(actions[int(obs)])
    if name in MUJOCO:
        loaded: list[Callable] = []

        def sac_policy(obs):
            if not loaded:  # first action: read the cached SAC actor (or train it once)
                from labkit.substrates.sac import sac_expert

                loaded.append(sac_expert(name))
            return loaded[0](obs)

        return sac_policy
    raise ValueError(f"no scripted expert for {name!r}: pass expert=<callable obs -> action>")


@dataclass(frozen=True)
class Behaviour:
    """Who collects the data. ``kind``:

    - ``"expert"``: the expert;  ``"random"``: uniformly random actions;
    - ``"noisy"``: at each step a random action with probability ``epsilon``, the expert's otherwise (D4RL "medium");
    - ``"mixed"``: per episode, the random policy with probability ``epsilon``, the expert otherwise."""

    kind: str = "expert"
    epsilon: float = 0.0

    def __post_init__(self):
        if self.kind not in ("expert", "random", "noisy", "mixed"):
            raise ValueError(f"kind must be expert, random, noisy or mixed, got {self.kind!r}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")

    @property
    def key(self) -> str:
        """A file-name-safe id: ``expert``, ``random``, ``noisy0.3``, ``mixed0.5``."""
        return self.kind if self.kind in ("expert", "random") else f"{self.kind}{self.epsilon:g}"


class BehaviourPolicy:
    """An episode-aware ``obs -> action`` callable for a :class:`Behaviour`: call :meth:`reset` at each episode
    start (it draws the mixed behaviour's policy for the episode). All randomness comes from ``rng``."""

    def __init__(self, behaviour: Behaviour, expert: Callable, action_space, rng: np.random.Generator):
        self.behaviour, self.expert, self.space, self.rng = behaviour, expert, action_space, rng
        self._random_episode = behaviour.kind == "random"

    def reset(self) -> None:
        if self.behaviour.kind == "mixed":
            self._random_episode = bool(self.rng.random() < self.behaviour.epsilon)

    def random_action(self):
        if hasattr(self.space, "n"):
            return int(self.rng.integers(self.space.n))
        return self.rng.uniform(self.space.low, self.space.high).astype(self.space.dtype)

    def __call__(self, obs):
        if self._random_episode:
            return self.random_action()
        if self.behaviour.kind == "noisy" and self.rng.random() < self.behaviour.epsilon:
            return self.random_action()
        return self.expert(obs)


# --------------------------------------------------------------------------------------------- references, scores

#: (R_random, R_expert) undiscounted episode returns. Classic control: measured by ``measure_reference(name)``
#: (100 episodes, reset seeds 0…99, gymnasium 1.0.0) for the uniformly random policy and the scripted expert;
#: CartPole's expert is the 500-step cap. MuJoCo: D4RL's published REF_MIN/MAX_SCORE (v2 tasks). The grids are
#: exact (:func:`labkit.substrates.gridworld.reference_returns`).
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "CartPole-v1": (23.68, 500.0),
    "labkit/CartPoleSparse-v1": (23.68 / CARTPOLE_MAX_STEPS, 1.0),
    "Acrobot-v1": (-497.08, -84.35),
    "Pendulum-v1": (-1207.56, -169.64),
    "Hopper-v5": (-20.272305, 3234.3),
    "Walker2d-v5": (1.629008, 4592.3),
    "HalfCheetah-v5": (-280.178953, 12135.0),
}


def reference_scores(env) -> tuple[float, float]:
    """(R_random, R_expert) of an env id, a gymnasium env, or a GridWorld (exact)."""
    from labkit.substrates import gridworld as gw

    if isinstance(env, gw.GridWorld):
        return gw.reference_returns(env)
    if not isinstance(env, str):
        mdp = grid_of(env)
        if mdp is not None:
            return gw.reference_returns(mdp)
        env = env.spec.id
    if env in GRID_PRESETS:
        return gw.reference_returns(gw.PRESETS[GRID_PRESETS[env]]())
    if env not in REFERENCE_SCORES:
        raise ValueError(f"no reference scores for {env!r}: pass reference=(R_random, R_expert)")
    return REFERENCE_SCORES[env]


def normalised_score(returns, reference: tuple[float, float], scale: float = 100.0):
    """D4RL: scale·(R − R_random)/(R_expert − R_random) (0 = random, scale = expert)."""
    low, high = reference
    out = scale * (np.asarray(returns, dtype=np.float64) - low) / (high - low)
    return float(out) if out.ndim == 0 else out


def run_episode(env, policy, seed: int | None = None, max_steps: int | None = None) -> float:
    """One episode of ``policy`` on ``env`` reset with ``seed``; returns the undiscounted return.

    ``policy``: an ``obs -> action`` callable or an object with ``act(obs)``; when it has ``reset()`` it is called
    first, and when it has ``observe(reward)`` it is called after every step (a Decision Transformer lowers its
    return-to-go there)."""
    act = policy.act if hasattr(policy, "act") else policy
    observe = getattr(policy, "observe", None)
    if hasattr(policy, "reset"):
        policy.reset()
    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(act(obs))
        if observe is not None:
            observe(float(reward))
        total += float(reward)
        steps += 1
        done = terminated or truncated or (max_steps is not None and steps >= max_steps)
    return total


def measure_reference(name: str, n_episodes: int = 100) -> tuple[float, float]:
    """Re-measure (R_random, R_expert) of a classic-control id as :data:`REFERENCE_SCORES` records them."""
    env = make_env(name)
    rng = np.random.default_rng(0)
    random_policy = BehaviourPolicy(Behaviour("random"), expert_for(name), env.action_space, rng)
    rand = np.mean([run_episode(env, random_policy, seed=i) for i in range(n_episodes)])
    expert = np.mean([run_episode(env, expert_for(name), seed=i) for i in range(n_episodes)])
    return float(rand), float(expert)


@dataclass(frozen=True)
class Evaluation:
    """Normalised returns: ``per_seed[k]`` is the mean over seed k's episodes; ``interval`` their mean with a 95%
    Student-t interval over seeds (a point for one seed); ``returns[k]`` the raw episode returns of seed k."""

    per_seed: tuple[float, ...]
    returns: tuple[tuple[float, ...], ...]
    reference: tuple[float, float]
    scale: float = 100.0

    @property
    def interval(self):
        from labkit.core.claims import Interval

        return Interval.of(self.per_seed)

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_seed))

    @classmethod
    def from_returns(cls, returns_per_seed, reference: tuple[float, float], scale: float = 100.0) -> Evaluation:
        """From raw episode returns, one sequence per seed (for agents whose rollout loop is their own)."""
        returns = tuple(tuple(float(r) for r in np.atleast_1d(rs)) for rs in returns_per_seed)
        per_seed = tuple(float(np.mean(normalised_score(rs, reference, scale))) for rs in returns)
        return cls(per_seed=per_seed, returns=returns, reference=tuple(reference), scale=scale)

    def text(self, decimals: int = 1) -> str:
        return self.interval.text(decimals)


def evaluate(
    policy,
    env,
    n_episodes: int = 10,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    exact: bool | None = None,
    reference: tuple[float, float] | None = None,
    scale: float = 100.0,
) -> Evaluation:
    """Mean normalised return over ``n_episodes`` per seed, and a 95% interval over ``seeds``.

    ``env``: a :class:`~labkit.substrates.gridworld.GridWorld`, an env id (built per seed with :func:`make_env`),
    or a gymnasium env. ``policy``: an ``obs -> action`` callable (or an object with ``act``, and optional
    ``reset()`` and ``observe(reward)`` hooks: see :func:`run_episode`), a policy table ``(S, A)`` or a Mixture
    (grids only), or a sequence of such, one per seed (e.g. agents trained with different seeds). Seed k's
    episode i resets the env with seed ``1000·seeds[k] + i``. On a GridWorld, tables and Mixtures are scored
    EXACTLY (``exact`` defaults to True for them; n_episodes is then unused); ``exact=False`` samples
    ``n_episodes`` rollouts per seed instead."""
    from labkit.substrates import gridworld as gw

    seeds = list(seeds)
    if not seeds or n_episodes < 1:
        raise ValueError("evaluate needs at least one seed and one episode")
    policies = list(policy) if isinstance(policy, (list, tuple)) else [policy] * len(seeds)
    if len(policies) != len(seeds):
        raise ValueError(f"got {len(policies)} policies for {len(seeds)} seeds")
    reference = reference or reference_scores(env)
    returns = []
    for pol, seed in zip(policies, seeds):
        tabular = isinstance(pol, gw.Mixture) or (isinstance(pol, (np.ndarray, torch.Tensor)) and pol.ndim == 2)
        if isinstance(env, gw.GridWorld) and tabular:
            if exact is None or exact:
                returns.append([gw.expected_return(env, pol)])
            else:
                data = gw.rollouts(env, pol, n_episodes, np.random.default_rng(seed))
                returns.append(list(data.episode_returns()))
            continue
        if tabular:
            raise ValueError("a policy table or Mixture can only be evaluated on a GridWorld")
        if isinstance(env, gw.GridWorld):
            episode_env = gw.gym_env(env)
        else:
            episode_env = make_env(env) if isinstance(env, str) else env
        returns.append([run_episode(episode_env, pol, seed=1000 * int(seed) + i) for i in range(n_episodes)])
    return Evaluation.from_returns(returns, reference, scale)


# --------------------------------------------------------------------------------------------- Minari


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$LABKIT_CACHE``, else ``~/.cache/labkit``; data sets live in its ``minari/``
    (a Minari datasets root: ``MINARI_DATASETS_PATH=<that> minari list local`` shows them)."""
    root = cache_dir or os.environ.get("LABKIT_CACHE") or Path.home() / ".cache" / "labkit"
    return Path(root).expanduser() / "minari"


def dataset_id(env_name: str, behaviour: Behaviour, n_episodes: int, seed: int, expert_name: str = "") -> str:
    """The cache key as a Minari id, e.g. ``CartPole-v1_expert_50ep_seed0-v1`` (version = FORMAT_VERSION)."""
    parts = [env_name, behaviour.key, f"{n_episodes}ep", f"seed{seed}"] + ([expert_name] if expert_name else [])
    return re.sub(r"[^-\w]", "_", "_".join(parts).replace("/", "_")) + f"-v{FORMAT_VERSION}"


@contextlib.contextmanager
def _minari_path(path: Path):
    """Point ``MINARI_DATASETS_PATH`` at ``path`` for the block (Minari reads it when it writes)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An exclusive ``fcntl.flock`` (none where fcntl does not exist; ``os.replace`` still keeps folders whole)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def from_minari(dataset, behaviour: str = "") -> OfflineDataset:
    """A ``minari.MinariDataset`` (or the path of its ``data`` folder) as an :class:`OfflineDataset`."""
    import minari

    if isinstance(dataset, (str, os.PathLike)):
        dataset = minari.MinariDataset(str(dataset))
    cols: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "next", "term", "trunc")}
    lengths = []
    for ep in dataset.iterate_episodes():
        obs = np.asarray(ep.observations)
        cols["obs"].append(obs[:-1])
        cols["next"].append(obs[1:])
        cols["act"].append(np.asarray(ep.actions))
        cols["rew"].append(np.asarray(ep.rewards, dtype=np.float32))
        cols["term"].append(np.asarray(ep.terminations, dtype=bool))
        cols["trunc"].append(np.asarray(ep.truncations, dtype=bool))
        lengths.append(len(ep.actions))
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    floaty = np.issubdtype(cat["obs"].dtype, np.floating)
    obs_dtype = np.float32 if floaty else np.int64
    act = cat["act"].astype(np.float32) if np.issubdtype(cat["act"].dtype, np.floating) else cat["act"].astype(np.int64)
    spec = dataset.spec.env_spec
    return OfflineDataset(
        observations=cat["obs"].astype(obs_dtype),
        actions=act,
        rewards=cat["rew"],
        next_observations=cat["next"].astype(obs_dtype),
        terminals=cat["term"],
        truncations=cat["trunc"],
        episode_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        env_id=spec.id if spec is not None else "",
        behaviour=behaviour or str(dataset.storage.metadata.get("algorithm_name", "")),
    )


def save_minari(data: OfflineDataset, env_name: str, dataset_name: str, root: str | os.PathLike) -> Path:
    """Write an :class:`OfflineDataset` (e.g. vectorised grid rollouts) as a Minari data set ``<root>/<name>``
    (``dataset_name`` like ``grid-expert-v0``); returns the folder. Reference scores are stored for
    ``minari.get_normalized_score``."""
    import minari
    from minari.data_collector import EpisodeBuffer

    env = make_env(env_name)
    buffers = []
    for i in range(data.n_episodes):
        lo, hi = data.episode_offsets[i], data.episode_offsets[i + 1]
        obs = np.concatenate([data.observations[lo:hi], data.next_observations[hi - 1 : hi]])
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=list(obs),
                actions=list(data.actions[lo:hi]),
                rewards=[float(r) for r in data.rewards[lo:hi]],
                terminations=[bool(x) for x in data.terminals[lo:hi]],
                truncations=[bool(x) for x in data.truncations[lo:hi]],
            )
        )
    low, high = reference_scores(env)
    with _minari_path(Path(root)), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(code_permalink|author_email).*", category=UserWarning)
        minari.create_dataset_from_buffers(
            dataset_id=dataset_name,
            buffer=buffers,
            env=env,
            eval_env=env.spec,
            author="labkit",
            algorithm_name=data.behaviour or "unknown",
            ref_min_score=low,
            ref_max_score=high,
            description=f"labkit offline data: {data.summary()}",
            data_format="hdf5",
        )
    return Path(root) / dataset_name


def record_episodes(
    env, policy, n_episodes: int, seed: int | None = None, *, progress: bool = False, desc: str = "episodes"
) -> OfflineDataset:
    """Run ``n_episodes`` of ``policy`` (as in :func:`run_episode`: ``reset()`` and ``observe(reward)`` are called
    when it has them) on ``env`` and keep every transition. Episode 0 resets with ``seed``, later ones continue."""
    from labkit.core.training import progress as bar

    act = policy.act if hasattr(policy, "act") else policy
    observe = getattr(policy, "observe", None)
    cols: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "next", "term", "trunc")}
    lengths = []
    for i in bar(range(n_episodes), desc=desc, enabled=progress):
        if hasattr(policy, "reset"):
            policy.reset()
        obs, _ = env.reset(seed=None if seed is None or i > 0 else int(seed))
        steps, done = 0, False
        while not done:
            action = act(obs)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            if observe is not None:
                observe(float(reward))
            for key, val in zip(cols, (obs, action, reward, next_obs, terminated, truncated)):
                cols[key].append(val)
            obs, steps, done = next_obs, steps + 1, terminated or truncated
        lengths.append(steps)
    obs = np.asarray(cols["obs"])
    obs_dtype = np.float32 if np.issubdtype(obs.dtype, np.floating) else np.int64
    actions = np.asarray(cols["act"])
    actions = actions.astype(np.float32) if np.issubdtype(actions.dtype, np.floating) else actions.astype(np.int64)
    return OfflineDataset(
        observations=obs.astype(obs_dtype),
        actions=actions,
        rewards=np.asarray(cols["rew"], dtype=np.float32),
        next_observations=np.asarray(cols["next"]).astype(obs_dtype),
        terminals=np.asarray(cols["term"], dtype=bool),
        truncations=np.asarray(cols["trunc"], dtype=bool),
        episode_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        env_id=env.spec.id if env.spec is not None else "",
    )


def collect_dataset(
    env_name: str,
    behaviour: Behaviour,
    n_episodes: int,
    seed: int = 0,
    *,
    expert: Callable | None = None,
    expert_name: str = "",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> OfflineDataset:
    """``n_episodes`` of ``behaviour`` on ``env_name``, written as a Minari data set into the cache
    (:func:`cache_root`, keyed by :func:`dataset_id`) the first time, and read back from there every time.

    Episode 0 resets the env with ``seed`` and later ones continue its stream; the behaviour's own randomness is
    ``numpy.random.default_rng(seed)``. ``expert`` replaces the scripted expert (then give it an ``expert_name``
    for the cache key). Writers take a lock and build in a temporary folder that is renamed into place, so
    concurrent notebooks never see half a data set; an unreadable folder is rebuilt."""
    import minari

    if n_episodes < 1:
        raise ValueError(f"n_episodes must be ≥ 1, got {n_episodes}")
    if expert is not None and not expert_name:
        raise ValueError("a custom expert needs an expert_name (it is part of the cache key)")
    if expert is None and env_name in MUJOCO and behaviour.kind != "random":
        from labkit.substrates import sac  # the default MuJoCo expert's settings are part of the key

        expert_name = "sac" + sac.cache_key(env_name, sac.DEFAULT_CONFIGS[env_name], 0)[:8]
    ds_id = dataset_id(env_name, behaviour, n_episodes, seed, expert_name)
    root = cache_root(cache_dir)
    final = root / ds_id
    if not rebuild:
        with contextlib.suppress(Exception):  # missing or unreadable: built below
            return from_minari(minari.MinariDataset(str(final / "data")), behaviour.key)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / f"{ds_id}.lock"):
        if final.exists() and not rebuild:
            try:  # another process may have written it while we waited
                return from_minari(minari.MinariDataset(str(final / "data")), behaviour.key)
            except Exception as err:  # noqa: BLE001 - any read failure means: rebuild
                warnings.warn(f"the cached data set {final} is unreadable ({err}); collecting it again", stacklevel=2)
        env = make_env(env_name)
        policy = BehaviourPolicy(behaviour, expert or expert_for(env), env.action_space, np.random.default_rng(seed))
        data = record_episodes(env, policy, n_episodes, seed, progress=progress, desc=f"collecting {ds_id}")
        data = dataclasses.replace(data, behaviour=behaviour.key)
        with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp:
            save_minari(data, env_name, ds_id, tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(Path(tmp) / ds_id, final)
    return from_minari(minari.MinariDataset(str(final / "data")), behaviour.key)


# --------------------------------------------------------------------------------------------- reference agents


def _features(obs, n_states: int | None) -> torch.Tensor:
    """Observations as a float tensor: one-hot for integer state indices (``n_states`` given), else float32."""
    x = torch.as_tensor(np.asarray(obs))
    if n_states is not None:
        return F.one_hot(x.long().reshape(-1), n_states).float().reshape(*x.shape, n_states)
    return x.float()


def _mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    from labkit.models.mlp import MLP

    return MLP(in_dim, list(hidden), out_dim)


class Agent(nn.Module):
    """Base of the reference agents: ``act(obs)`` takes ONE observation (numpy) or a batch and returns the action(s)
    as numpy (an int for one discrete observation); usable directly by :func:`evaluate` and :func:`run_episode`.
    Discrete: ``n_actions``; continuous: ``low``/``high`` action bounds (actions are squashed into them)."""

    def __init__(self, obs_dim: int, n_states: int | None, n_actions: int | None, low=None, high=None):
        super().__init__()
        self.obs_dim, self.n_states, self.n_actions = obs_dim, n_states, n_actions
        if n_actions is None:
            self.register_buffer("low", torch.as_tensor(np.asarray(low), dtype=torch.float32).reshape(-1))
            self.register_buffer("high", torch.as_tensor(np.asarray(high), dtype=torch.float32).reshape(-1))

    @property
    def discrete(self) -> bool:
        return self.n_actions is not None

    def features(self, obs) -> torch.Tensor:
        return _features(obs, self.n_states).to(next(self.parameters()).device)

    def squash(self, u: torch.Tensor) -> torch.Tensor:
        """[−1, 1]ᵈ → [low, high]:  a = low + (u + 1)/2 · (high − low)."""
        return self.low + (u + 1.0) * 0.5 * (self.high - self.low)

    def unsquash(self, a: torch.Tensor) -> torch.Tensor:
        """[low, high] → [−1, 1]ᵈ."""
        return 2.0 * (a - self.low) / (self.high - self.low) - 1.0

    def mean_action(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - each agent defines it
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs):
        single = np.asarray(obs).ndim == (0 if self.n_states is not None else 1)
        x = self.features(np.asarray(obs)[None] if single else obs)
        out = self.mean_action(x).cpu().numpy()
        return (int(out[0]) if self.discrete else out[0]) if single else out


def _dims(data: OfflineDataset, n_states: int | None):
    if data.observations.ndim == 1 and np.issubdtype(data.observations.dtype, np.integer):
        if n_states is None:
            raise ValueError("integer observations (a grid) need n_states for their one-hot features")
        return n_states, n_states
    return int(np.prod(data.observations.shape[1:])), None


def _action_info(data: OfflineDataset, n_actions: int | None, low, high):
    if data.discrete:
        return (n_actions or int(data.actions.max()) + 1), None, None
    low = data.actions.min(0) if low is None else low
    high = data.actions.max(0) if high is None else high
    return None, low, high


def _default_check(step: int, loss: torch.Tensor, series: str) -> None:
    from labkit.core.training import check_finite

    check_finite(loss, step, series)


class BCAgent(Agent):
    """Behaviour cloning. Discrete: logits f(s) ∈ R^A, π(a|s) = softmax(f(s)). Continuous: the deterministic action
    μ(s) = squash(tanh f(s)) in the action box."""

    def __init__(self, obs_dim, n_states, n_actions, low=None, high=None, hidden=(64, 64)):
        super().__init__(obs_dim, n_states, n_actions, low, high)
        out = n_actions if n_actions is not None else len(np.asarray(low).reshape(-1))
        self.net = _mlp(obs_dim, hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, A)`` (discrete) or actions ``(B, d)`` in the box (continuous)."""
        out = self.net(x)
        return out if self.discrete else self.squash(torch.tanh(out))

    def mean_action(self, x):
        return self(x).argmax(-1) if self.discrete else self(x)


def bc_loss(agent: BCAgent, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Discrete: L = −(1/B) Σ_i log π(a_i|s_i).   Continuous: L = (1/B) Σ_i ‖μ(s_i) − a_i‖² (in [−1, 1] units)."""
    if agent.discrete:
        # −log softmax(f(s))[a], averaged over the batch
        return F.cross_entropy(agent(obs), actions.long())
    # squared error in the normalised action box, so every action dimension weighs the same
    return (agent.unsquash(agent(obs)) - agent.unsquash(actions)).pow(2).sum(-1).mean()


def train_bc(
    data: OfflineDataset,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    hidden: Sequence[int] = (64, 64),
    weight_decay: float = 0.0,
    n_states: int | None = None,
    n_actions: int | None = None,
    action_low=None,
    action_high=None,
    seed: int = 0,
    on_step: Callable[[int, torch.Tensor, str], None] | None = None,
    progress: bool = False,
) -> BCAgent:
    """Behaviour cloning on ``data`` with Adam (minibatches drawn uniformly with replacement, ``seed`` fixes the
    init and the draws). Integer observations (the grid) are one-hot encoded (``n_states``). Continuous action
    bounds default to the data's range (pass the env's ``action_space.low/high``).

    ``on_step(step, loss, series)`` is called on every loss (default: raise ``DivergenceError`` on NaN/inf; a
    method passes ``lambda step, loss, series: ctx.check(loss, step, series)``)."""
    from labkit.core.training import check_weights
    from labkit.core.training import progress as bar

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    obs_dim, n_states = _dims(data, n_states)
    n_actions, low, high = _action_info(data, n_actions, action_low, action_high)
    agent = BCAgent(obs_dim, n_states, n_actions, low, high, hidden)
    opt = torch.optim.Adam(agent.parameters(), lr=lr, weight_decay=weight_decay)
    obs = agent.features(data.observations)
    act = torch.as_tensor(data.actions)
    check = on_step or _default_check
    for step in bar(range(steps), desc="BC", enabled=progress):
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        loss = bc_loss(agent, obs[idx], act[idx])
        check(step, loss, "bc")
        opt.zero_grad()
        loss.backward()
        opt.step()
    check_weights(agent, steps, "bc")
    return agent.eval()


class IQLAgent(Agent):
    """Implicit Q-learning's networks: two Q heads (discrete: Q(s, ·) ∈ R^A; continuous: Q(s, a)), V(s), their
    target copies, and the policy (discrete: logits; continuous: a Gaussian with mean tanh f(s) in [−1, 1] units and
    a state-independent log σ). ``act`` is the greedy / mean action."""

    def __init__(self, obs_dim, n_states, n_actions, low=None, high=None, hidden=(64, 64)):
        super().__init__(obs_dim, n_states, n_actions, low, high)
        act_dim = None if n_actions is not None else len(np.asarray(low).reshape(-1))
        q_in, q_out = (obs_dim, n_actions) if self.discrete else (obs_dim + act_dim, 1)
        self.q1, self.q2 = _mlp(q_in, hidden, q_out), _mlp(q_in, hidden, q_out)
        self.q1_target, self.q2_target = _mlp(q_in, hidden, q_out), _mlp(q_in, hidden, q_out)
        self.q1_target.load_state_dict(self.q1.state_dict())
        self.q2_target.load_state_dict(self.q2.state_dict())
        for p in [*self.q1_target.parameters(), *self.q2_target.parameters()]:
            p.requires_grad_(False)
        self.v = _mlp(obs_dim, hidden, 1)
        self.pi = _mlp(obs_dim, hidden, n_actions if self.discrete else act_dim)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.zeros(act_dim))

    def q_values(self, x, a, target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q1(s,a), Q2(s,a)), each ``(B,)``; ``a`` is an index (discrete) or an action in the box."""
        q1, q2 = (self.q1_target, self.q2_target) if target else (self.q1, self.q2)
        if self.discrete:
            idx = a.long().reshape(-1, 1)
            return q1(x).gather(1, idx).squeeze(1), q2(x).gather(1, idx).squeeze(1)
        xa = torch.cat([x, self.unsquash(a)], -1)
        return q1(xa).squeeze(-1), q2(xa).squeeze(-1)

    def log_prob(self, x, a) -> torch.Tensor:
        """log π(a|s) ``(B,)`` (continuous: Gaussian density of the action in [−1, 1] units)."""
        if self.discrete:
            return F.log_softmax(self.pi(x), -1).gather(1, a.long().reshape(-1, 1)).squeeze(1)
        mean = torch.tanh(self.pi(x))
        std = self.log_std.clamp(-5.0, 2.0).exp()
        return torch.distributions.Normal(mean, std).log_prob(self.unsquash(a)).sum(-1)

    def mean_action(self, x):
        return self.pi(x).argmax(-1) if self.discrete else self.squash(torch.tanh(self.pi(x)))


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """L_2^τ(u) = |τ − 1(u < 0)|·u², averaged (u = Q̂(s,a) − V(s); τ > 0.5 pushes V towards the upper expectile)."""
    weight = (tau - (diff < 0).float()).abs()
    return (weight * diff.pow(2)).mean()


def iql_losses(agent: IQLAgent, batch: dict, *, gamma: float, expectile: float, beta: float, max_weight: float = 100.0):
    """The three IQL losses on one batch (obs, actions, rewards, next_obs, terminals):

    L_V = E[L_2^τ(min(Q1', Q2')(s,a) − V(s))]                                   (target Qs, frozen)
    L_Q = E[(r + γ(1 − done)·V(s') − Q_i(s,a))²]  summed over i = 1, 2          (V frozen)
    L_π = −E[min(exp(β·(min Q'(s,a) − V(s))), max_weight) · log π(a|s)]         (advantage-weighted regression)
    """
    x, a, r, x2, done = batch["obs"], batch["actions"], batch["rewards"], batch["next_obs"], batch["terminals"]
    with torch.no_grad():
        q_target = torch.minimum(*agent.q_values(x, a, target=True))
        target = r + gamma * (1.0 - done) * agent.v(x2).squeeze(-1)
    v = agent.v(x).squeeze(-1)
    value_loss = expectile_loss(q_target - v, expectile)
    q1, q2 = agent.q_values(x, a)
    q_loss = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()
    with torch.no_grad():
        weight = torch.exp(beta * (q_target - v)).clamp(max=max_weight)
    policy_loss = -(weight * agent.log_prob(x, a)).mean()
    return value_loss, q_loss, policy_loss


def train_iql(
    data: OfflineDataset,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 3e-4,
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    expectile: float = 0.7,
    beta: float = 3.0,
    target_tau: float = 0.005,
    n_states: int | None = None,
    n_actions: int | None = None,
    action_low=None,
    action_high=None,
    seed: int = 0,
    on_step: Callable[[int, torch.Tensor, str], None] | None = None,
    progress: bool = False,
) -> IQLAgent:
    """Implicit Q-learning (Kostrikov et al. 2021, d3rlpy's defaults: τ 0.7, β 3, weights clipped at 100, Polyak
    0.005, Adam 3e-4 for all nets). Truncated steps bootstrap from V(s'); terminal steps do not. ``on_step``: as in
    :func:`train_bc` (series ``iql_value``, ``iql_q``, ``iql_policy``)."""
    from labkit.core.training import check_weights
    from labkit.core.training import progress as bar

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    obs_dim, n_states = _dims(data, n_states)
    n_actions, low, high = _action_info(data, n_actions, action_low, action_high)
    agent = IQLAgent(obs_dim, n_states, n_actions, low, high, hidden)
    opt_q = torch.optim.Adam([*agent.q1.parameters(), *agent.q2.parameters()], lr=lr)
    opt_v = torch.optim.Adam(agent.v.parameters(), lr=lr)
    pi_params = [*agent.pi.parameters()] + ([] if agent.discrete else [agent.log_std])
    opt_pi = torch.optim.Adam(pi_params, lr=lr)
    tensors = {
        "obs": agent.features(data.observations),
        "actions": torch.as_tensor(data.actions),
        "rewards": torch.as_tensor(data.rewards, dtype=torch.float32),
        "next_obs": agent.features(data.next_observations),
        "terminals": torch.as_tensor(data.terminals, dtype=torch.float32),
    }
    check = on_step or _default_check
    for step in bar(range(steps), desc="IQL", enabled=progress):
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        batch = {k: v[idx] for k, v in tensors.items()}
        value_loss, q_loss, policy_loss = iql_losses(agent, batch, gamma=gamma, expectile=expectile, beta=beta)
        for loss, series in ((value_loss, "iql_value"), (q_loss, "iql_q"), (policy_loss, "iql_policy")):
            check(step, loss, series)
        for opt, loss in ((opt_v, value_loss), (opt_q, q_loss), (opt_pi, policy_loss)):
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # Polyak averaging of the target Qs
            for net, tgt in ((agent.q1, agent.q1_target), (agent.q2, agent.q2_target)):
                for p, pt in zip(net.parameters(), tgt.parameters()):
                    pt.lerp_(p, target_tau)
    check_weights(agent, steps, "iql")
    return agent.eval()

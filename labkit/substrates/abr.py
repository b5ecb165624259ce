"""Adaptive-bitrate (ABR) video streaming, written once: a chunk-level player simulator, synthetic throughput
traces, QoE, the classic ABR rules (BBA, rate-based, RobustMPC), rollouts and an experience pool. NumPy only.

The world is Pensieve's, as NetLLM's official code uses it, at the sizes of labkit's card 09:

    video     N = 48 chunks of L = 4 s, each at one of 6 bitrates R = (300, 750, 1200, 1850, 2850, 4300) kbit/s;
              chunk size S[k, ℓ] = R_ℓ · L · U(0.9, 1.1) megabits, known to the player in advance (the manifest)
    trace     throughput c(t) in Mbit/s, constant over 1-s slots, repeated periodically past its end; a session
              starts at a random offset into its trace (as Pensieve's mahimahi pointer)
    download  the request leaves at time t; after a round trip RTT = 80 ms the bits arrive at rate c(·):
                  d_k = RTT + τ_k   with   ∫_{t+RTT}^{t+RTT+τ_k} c(u) du = S[k, ℓ_k]
              (d_k = S/c + RTT on a constant trace); the player measures the throughput S / d_k
    buffer    stall      ρ_k = max(0, d_k − b_k) for k ≥ 1 (the first download is the startup delay, not a stall)
              update     b_{k+1} = max(b_k − d_k, 0) + L; if b_{k+1} > B_max = 60 s the player waits
                         b_{k+1} − B_max seconds (the clock runs, the buffer drains back to B_max)
    QoE       per chunk  q_k = R_k − μ·ρ_k − |R_k − R_{k−1}|     (R in Mbit/s, μ = 4.3, no smoothness term at k = 0)
              a session's QoE is the mean of q_k over its chunks ("QoE per chunk"); q_k is also the RL reward

Pensieve's state, a (6, 6) array of normalised numbers (the newest value in the last column; each row keeps six
past values, the encoders read the last one of rows 0, 1 and 5):

    row 0  last bitrate / 4300 kbit/s          row 3  past 6 download times / 10 s
    row 1  buffer / 10 s                       row 4  the next chunk's 6 sizes in megabytes
    row 2  past 6 throughputs in MB/s          row 5  chunks remaining / 48

Throughput traces (:func:`make_traces`): a log-normal Markov random walk with regime switches. Per trace a mean
μ ~ U(1, 3) Mbit/s; every second the regime switches with probability p and draws a new log-level m ~ N(0, v·σ_r²);
inside a regime an AR(1) noise x_t = φ·x_{t−1} + √(1−φ²)·√v·σ_n·ε_t wiggles around it, and

    c_t = μ · exp(m_t + x_t − v·(σ_r² + σ_n²)/2)          (so that E[c_t] = μ), floored at 0.05 Mbit/s.

``variance_scale`` v = 1 for the training distribution; the card's "unseen" traces use v = 2 (twice the variance
of log-throughput: deeper dips, higher peaks).

The rules (each picks a level ℓ ∈ {0..5} per session, vectorised over sessions):

    BBA        (Huang et al. 2014, written as in Pensieve's and NetLLM's code) reservoir r = 5 s, cushion c = 10 s:
               ℓ = 0 if b < r;  5 if b ≥ r + c;  else ⌊5 · (b − r) / c⌋
    rate-based Ĉ = harmonic mean of the last 5 measured throughputs; the highest bitrate R_ℓ ≤ Ĉ (level 0 without
               history)
    MPC        (RobustMPC, Yin et al. 2015) Ĉ_robust = Ĉ / (1 + max relative error of the last 5 estimates);
               enumerate all 6^h plans for the next h chunks (h = 3: 216 plans), simulate the buffer with
               download S/Ĉ_robust, score Σ q, take the first level of the best plan (level 0 without history)

A :class:`Player` steps B sessions in lockstep (every quantity an array of shape ``(B,)``); :func:`rollout`
plays any :class:`Policy` (``reset(n)``, ``act(obs) -> levels``, ``update(levels, step)``) over a trace set and
returns an :class:`Episodes` record; :func:`collect_pool` rolls several behaviour policies out on training traces
and keeps (state, action, reward): NetLLM's experience pool.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

BITRATES_KBPS = (300.0, 750.0, 1200.0, 1850.0, 2850.0, 4300.0)
N_LEVELS = len(BITRATES_KBPS)
CHUNK_S = 4.0
N_CHUNKS = 48
RTT_S = 0.08
BUFFER_CAP_S = 60.0
REBUF_PENALTY = 4.3
SMOOTH_PENALTY = 1.0
HISTORY = 6  # columns of Pensieve's state
BUFFER_NORM_S = 10.0
SIZE_NOISE = 0.1  # chunk sizes R·L·U(1 − 0.1, 1 + 0.1)


def bitrates_mbps() -> np.ndarray:
    return np.asarray(BITRATES_KBPS) / 1000.0


# --------------------------------------------------------------------------------------------- video and traces


@dataclass(frozen=True)
class Video:
    """Chunk sizes ``sizes_mb (N, 6)`` in megabits (bitrate · chunk length · noise), known to the player."""

    sizes_mb: np.ndarray
    chunk_s: float = CHUNK_S

    @property
    def n_chunks(self) -> int:
        return self.sizes_mb.shape[0]


def make_video(rng: np.random.Generator, n_chunks: int = N_CHUNKS, noise: float = SIZE_NOISE) -> Video:
    """S[k, ℓ] = R_ℓ · L · U(1 − noise, 1 + noise) megabits."""
    base = bitrates_mbps()[None, :] * CHUNK_S
    return Video(base * rng.uniform(1 - noise, 1 + noise, size=(n_chunks, N_LEVELS)))


@dataclass(frozen=True)
class Traces:
    """Throughput ``mbps (B, T)`` per slot of ``slot_s`` seconds, and each session's start time ``start_s (B,)``."""

    mbps: np.ndarray
    start_s: np.ndarray
    slot_s: float = 1.0
    name: str = ""

    @property
    def n(self) -> int:
        return self.mbps.shape[0]

    def take(self, index) -> Traces:
        index = np.asarray(index)
        return Traces(self.mbps[index], self.start_s[index], self.slot_s, self.name)

    @staticmethod
    def concat(parts: list[Traces], name: str = "") -> Traces:
        return Traces(
            np.concatenate([p.mbps for p in parts]), np.concatenate([p.start_s for p in parts]), parts[0].slot_s, name
        )


def make_traces(
    rng: np.random.Generator,
    n: int,
    *,
    length_s: int = 400,
    mean_mbps: tuple[float, float] = (1.0, 3.0),
    regime_std: float = 0.5,
    noise_std: float = 0.3,
    switch_prob: float = 0.05,
    phi: float = 0.9,
    variance_scale: float = 1.0,
    floor_mbps: float = 0.05,
    name: str = "",
) -> Traces:
    """``n`` log-normal Markov random walks with regime switches (module docstring), 1-s slots, random starts."""
    mu = rng.uniform(*mean_mbps, size=(n, 1))
    s_r, s_n = np.sqrt(variance_scale) * regime_std, np.sqrt(variance_scale) * noise_std
    switch = rng.random((n, length_s)) < switch_prob
    switch[:, 0] = True
    levels = rng.normal(0.0, s_r, size=(n, length_s))
    # the regime's log-level holds until the next switch: index of the last switch at or before t
    last = np.maximum.accumulate(np.where(switch, np.arange(length_s), 0), axis=1)
    m = np.take_along_axis(levels, last, axis=1)
    eps = rng.normal(size=(n, length_s))
    x = np.empty((n, length_s))
    x[:, 0] = s_n * eps[:, 0]
    for t in range(1, length_s):
        x[:, t] = phi * x[:, t - 1] + np.sqrt(1 - phi**2) * s_n * eps[:, t]
    mbps = np.maximum(mu * np.exp(m + x - (s_r**2 + s_n**2) / 2), floor_mbps)
    return Traces(mbps, rng.uniform(0, length_s, size=n), 1.0, name)


def constant_traces(mbps, length_s: int = 400) -> Traces:
    """Traces of constant throughput (one per value), starting at t = 0: for hand-checkable cases."""
    mbps = np.atleast_1d(np.asarray(mbps, float))
    return Traces(np.repeat(mbps[:, None], length_s, axis=1), np.zeros(len(mbps)), 1.0, "constant")


# --------------------------------------------------------------------------------------------- the player


@dataclass(frozen=True)
class Observation:
    """What a policy sees before choosing chunk ``chunk``'s level (arrays over B sessions)."""

    state: np.ndarray  # (B, 6, 6) Pensieve's normalised state
    buffer_s: np.ndarray  # (B,)
    last_level: np.ndarray  # (B,) int, the previous chunk's level (0 before the first)
    throughput_mbps: np.ndarray  # (B, n_past) measured throughputs, oldest first (n_past = min(chunk, 6))
    chunk: int
    video: Video


@dataclass(frozen=True)
class Step:
    """One chunk of B sessions: the terms of q_k and what the player measured."""

    level: np.ndarray
    bitrate_mbps: np.ndarray
    download_s: np.ndarray
    rebuffer_s: np.ndarray
    smooth_mbps: np.ndarray
    wait_s: np.ndarray
    buffer_s: np.ndarray  # after the chunk arrived (and any wait)
    qoe: np.ndarray  # q_k = R − μ·ρ − |ΔR|


class Player:
    """B streaming sessions in lockstep over ``traces`` (one session per trace)."""

    def __init__(self, video: Video, traces: Traces, rtt_s: float = RTT_S, buffer_cap_s: float = BUFFER_CAP_S):
        self.video, self.traces, self.rtt, self.cap_s = video, traces, rtt_s, buffer_cap_s
        B, T = traces.mbps.shape
        # delivered megabits by each slot boundary, (B, T + 1), and per period of T slots
        self.cum = np.concatenate([np.zeros((B, 1)), np.cumsum(traces.mbps * traces.slot_s, axis=1)], axis=1)
        self.period_mb = self.cum[:, -1]
        self.period_s = T * traces.slot_s
        self.t = traces.start_s.astype(float).copy()
        self.buffer = np.zeros(B)
        self.chunk = 0
        self.last_level = np.zeros(B, dtype=int)
        self.state = np.zeros((B, 6, HISTORY))
        self.measured: list[np.ndarray] = []

    def delivered(self, t: np.ndarray) -> np.ndarray:
        """∫_0^t c(u) du in megabits (the trace repeats with its period)."""
        k = np.floor(t / self.period_s)
        r = t - k * self.period_s
        i = np.minimum((r // self.traces.slot_s).astype(int), self.traces.mbps.shape[1] - 1)
        rows = np.arange(len(t))
        return k * self.period_mb + self.cum[rows, i] + (r - i * self.traces.slot_s) * self.traces.mbps[rows, i]

    def time_when_delivered(self, target_mb: np.ndarray) -> np.ndarray:
        """The time t at which ∫_0^t c = ``target_mb`` (inverse of :meth:`delivered`)."""
        B, T1 = self.cum.shape
        k = np.floor(target_mb / self.period_mb)
        rem = target_mb - k * self.period_mb
        # one searchsorted over all rows: shift row b by b·(max period + 1) so the flat array stays sorted
        shift = (self.period_mb.max() + 1.0) * np.arange(B)
        flat = (self.cum + shift[:, None]).ravel()
        i = np.searchsorted(flat, rem + shift, side="right") - 1 - np.arange(B) * T1
        i = np.clip(i, 0, T1 - 2)
        rows = np.arange(B)
        return k * self.period_s + i * self.traces.slot_s + (rem - self.cum[rows, i]) / self.traces.mbps[rows, i]

    def observe(self) -> Observation:
        past = np.stack(self.measured[-HISTORY:], axis=1) if self.measured else np.zeros((len(self.t), 0))
        return Observation(self.state.copy(), self.buffer.copy(), self.last_level.copy(), past, self.chunk, self.video)

    def step(self, levels) -> Step:
        """Download chunk ``self.chunk`` at ``levels (B,)`` and advance every session."""
        levels = np.asarray(levels, dtype=int)
        if self.chunk >= self.video.n_chunks:
            raise RuntimeError("the video is over")
        if levels.min() < 0 or levels.max() >= N_LEVELS:
            raise ValueError(f"levels must be in [0, {N_LEVELS - 1}], got {levels}")
        size = self.video.sizes_mb[self.chunk, levels]
        start = self.t + self.rtt
        done = self.time_when_delivered(self.delivered(start) + size)
        download = done - self.t
        # ρ_k = max(0, d_k − b_k), k ≥ 1 (the first download is the startup delay)
        rebuffer = np.maximum(download - self.buffer, 0.0) if self.chunk > 0 else np.zeros_like(download)
        # b ← max(b − d, 0) + L, then wait until b ≤ B_max
        buffer = np.maximum(self.buffer - download, 0.0) + self.video.chunk_s
        wait = np.maximum(buffer - self.cap_s, 0.0)
        self.buffer = buffer - wait
        self.t = done + wait
        rates = bitrates_mbps()
        bitrate = rates[levels]
        smooth = np.abs(bitrate - rates[self.last_level]) if self.chunk > 0 else np.zeros_like(bitrate)
        # q_k = R_k − μ·ρ_k − |R_k − R_{k−1}|
        qoe = bitrate - REBUF_PENALTY * rebuffer - SMOOTH_PENALTY * smooth
        throughput = size / download
        self.measured.append(throughput)
        self.last_level = levels
        self.chunk += 1
        self._update_state(bitrate, throughput, download)
        return Step(levels, bitrate, download, rebuffer, smooth, wait, self.buffer.copy(), qoe)

    def _update_state(self, bitrate, throughput, download) -> None:
        s = np.roll(self.state, -1, axis=2)
        s[:, 0, -1] = bitrate / bitrates_mbps()[-1]
        s[:, 1, -1] = self.buffer / BUFFER_NORM_S
        s[:, 2, -1] = throughput / 8.0  # MB/s
        s[:, 3, -1] = download / BUFFER_NORM_S
        nxt = self.video.sizes_mb[self.chunk] if self.chunk < self.video.n_chunks else np.zeros(N_LEVELS)
        s[:, 4, :] = 0.0
        s[:, 4, :N_LEVELS] = nxt / 8.0  # MB
        s[:, 5, -1] = (self.video.n_chunks - self.chunk) / N_CHUNKS
        self.state = s


# --------------------------------------------------------------------------------------------- policies


class Policy(Protocol):
    """Anything :func:`rollout` can play: ``reset(n)`` before a session, ``act`` per chunk, ``update`` after it."""

    def reset(self, n: int) -> None: ...

    def act(self, obs: Observation) -> np.ndarray: ...

    def update(self, levels: np.ndarray, step: Step) -> None: ...


class Rule:
    """A stateless rule: subclasses write ``act``."""

    def reset(self, n: int) -> None:
        pass

    def update(self, levels: np.ndarray, step: Step) -> None:
        pass


def bba_level(buffer_s, reservoir_s: float = 5.0, cushion_s: float = 10.0) -> np.ndarray:
    """BBA: ℓ = 0 if b < r, 5 if b ≥ r + c, else ⌊5·(b − r)/c⌋."""
    b = np.asarray(buffer_s, float)
    linear = np.floor((N_LEVELS - 1) * (b - reservoir_s) / cushion_s)
    return np.where(b < reservoir_s, 0, np.where(b >= reservoir_s + cushion_s, N_LEVELS - 1, linear)).astype(int)


def harmonic_mean(throughput_mbps: np.ndarray, k: int = 5) -> np.ndarray:
    """Ĉ = k' / Σ_j 1/c_j over the last k' = min(k, available) measurements, per row; NaN without any."""
    past = throughput_mbps[:, -k:]
    if past.shape[1] == 0:
        return np.full(past.shape[0], np.nan)
    return past.shape[1] / (1.0 / past).sum(axis=1)


def rate_level(estimate_mbps) -> np.ndarray:
    """The highest level whose bitrate ≤ the estimate (level 0 when none fits or there is no estimate)."""
    est = np.nan_to_num(np.asarray(estimate_mbps, float), nan=0.0)
    return np.maximum((bitrates_mbps()[None, :] <= est[:, None]).sum(axis=1) - 1, 0)


class BBA(Rule):
    def __init__(self, reservoir_s: float = 5.0, cushion_s: float = 10.0):
        self.reservoir_s, self.cushion_s = reservoir_s, cushion_s

    def act(self, obs: Observation) -> np.ndarray:
        return bba_level(obs.buffer_s, self.reservoir_s, self.cushion_s)


class RateBased(Rule):
    def __init__(self, k: int = 5):
        self.k = k

    def act(self, obs: Observation) -> np.ndarray:
        return rate_level(harmonic_mean(obs.throughput_mbps, self.k))


def all_plans(horizon: int) -> np.ndarray:
    """Every sequence of levels for ``horizon`` chunks, ``(6^h, h)`` (h = 3: 216 plans)."""
    return np.array(list(itertools.product(range(N_LEVELS), repeat=horizon)), dtype=int)


def plan_scores(buffer_s, last_level, estimate_mbps, sizes_mb: np.ndarray, plans: np.ndarray) -> np.ndarray:
    """MPC's objective for every plan and session, ``(B, P)``: Σ_j q_j with download S[j, ℓ_j]/Ĉ (no RTT).

    ``sizes_mb (h, 6)`` are the next h chunks' sizes, ``plans (P, h)`` the level sequences."""
    rates = bitrates_mbps()
    b = np.asarray(buffer_s, float)[:, None].repeat(len(plans), axis=1)
    prev = rates[np.asarray(last_level)][:, None]
    est = np.asarray(estimate_mbps, float)[:, None]
    score = np.zeros_like(b)
    for j in range(plans.shape[1]):
        rate = rates[plans[:, j]][None, :]
        download = sizes_mb[j, plans[:, j]][None, :] / est
        rebuffer = np.maximum(download - b, 0.0)
        b = np.maximum(b - download, 0.0) + CHUNK_S
        score = score + rate - REBUF_PENALTY * rebuffer - SMOOTH_PENALTY * np.abs(rate - prev)
        prev = rate
    return score


class RobustMPC:
    """RobustMPC over all 6^h plans (module docstring); keeps the past estimates to measure its errors."""

    def __init__(self, horizon: int = 3, k: int = 5, robust: bool = True):
        self.horizon, self.k, self.robust = horizon, k, robust
        self.plans = {h: all_plans(h) for h in range(1, horizon + 1)}

    def reset(self, n: int) -> None:
        self.errors: list[np.ndarray] = []
        self.last_estimate: np.ndarray | None = None

    def act(self, obs: Observation) -> np.ndarray:
        if obs.throughput_mbps.shape[1] == 0:
            return np.zeros(len(obs.buffer_s), dtype=int)
        actual = obs.throughput_mbps[:, -1]
        if self.last_estimate is not None:
            self.errors.append(np.abs(self.last_estimate - actual) / actual)
        estimate = harmonic_mean(obs.throughput_mbps, self.k)
        self.last_estimate = estimate
        max_error = np.max(self.errors[-self.k :], axis=0) if self.errors and self.robust else 0.0
        h = min(self.horizon, obs.video.n_chunks - obs.chunk)
        sizes = obs.video.sizes_mb[obs.chunk : obs.chunk + h]
        scores = plan_scores(obs.buffer_s, obs.last_level, estimate / (1.0 + max_error), sizes, self.plans[h])
        # ties go to the first plan in enumeration order (the lowest levels)
        return self.plans[h][scores.argmax(axis=1), 0]

    def update(self, levels: np.ndarray, step: Step) -> None:
        pass


class EpsilonGreedy:
    """``policy`` with probability 1 − ε, a uniformly random level with probability ε (per session and chunk)."""

    def __init__(self, policy: Policy, eps: float, rng: np.random.Generator):
        self.policy, self.eps, self.rng = policy, eps, rng

    def reset(self, n: int) -> None:
        self.policy.reset(n)

    def act(self, obs: Observation) -> np.ndarray:
        base = self.policy.act(obs)
        explore = self.rng.random(len(base)) < self.eps
        return np.where(explore, self.rng.integers(0, N_LEVELS, len(base)), base)

    def update(self, levels: np.ndarray, step: Step) -> None:
        self.policy.update(levels, step)


# --------------------------------------------------------------------------------------------- rollouts and pool


@dataclass(frozen=True)
class Episodes:
    """B sessions of N chunks: the states seen, the levels chosen, and every term of the QoE, ``(B, N)`` each
    (``states (B, N, 6, 6)``: the state on which that chunk's level was chosen)."""

    states: np.ndarray
    levels: np.ndarray
    qoe: np.ndarray
    bitrate_mbps: np.ndarray
    rebuffer_s: np.ndarray
    smooth_mbps: np.ndarray
    buffer_s: np.ndarray
    download_s: np.ndarray
    time_s: np.ndarray  # session time when each chunk arrived (after any wait), from the session's start

    @property
    def qoe_per_chunk(self) -> np.ndarray:
        """Each session's QoE: the mean of q_k over its chunks, ``(B,)``."""
        return self.qoe.mean(axis=1)


def rollout(policy: Policy, video: Video, traces: Traces) -> Episodes:
    """Play ``policy`` over every trace (one session each, in lockstep) for the whole video."""
    player = Player(video, traces)
    policy.reset(traces.n)
    rows: list[tuple[np.ndarray, Step]] = []
    for _ in range(video.n_chunks):
        obs = player.observe()
        levels = np.asarray(policy.act(obs), dtype=int)
        step = player.step(levels)
        policy.update(levels, step)
        rows.append((obs.state, step, player.t - traces.start_s))
    stack = lambda xs: np.stack(xs, axis=1)  # noqa: E731
    return Episodes(
        states=stack([r[0] for r in rows]).astype(np.float32),
        levels=stack([r[1].level for r in rows]),
        qoe=stack([r[1].qoe for r in rows]),
        bitrate_mbps=stack([r[1].bitrate_mbps for r in rows]),
        rebuffer_s=stack([r[1].rebuffer_s for r in rows]),
        smooth_mbps=stack([r[1].smooth_mbps for r in rows]),
        buffer_s=stack([r[1].buffer_s for r in rows]),
        download_s=stack([r[1].download_s for r in rows]),
        time_s=stack([r[2] for r in rows]),
    )


@dataclass(frozen=True)
class ExperiencePool:
    """NetLLM's experience pool: E episodes of N steps, ``states (E, N, 6, 6)``, ``actions (E, N)``,
    ``rewards (E, N)`` (= q_k), and which behaviour policy played each episode (``source (E,)``, into ``names``)."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    source: np.ndarray
    names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_steps(self) -> int:
        return int(self.actions.size)


def collect_pool(behaviours: dict[str, Policy], video: Video, traces: Traces) -> ExperiencePool:
    """Roll behaviour policy j out on traces j, j + P, j + 2P, … (P policies) and keep (s, a, r) per chunk."""
    names = tuple(behaviours)
    parts = []
    for j, name in enumerate(names):
        idx = np.arange(j, traces.n, len(names))
        if len(idx):
            parts.append((j, idx, rollout(behaviours[name], video, traces.take(idx))))
    inverse = np.argsort(np.concatenate([idx for _, idx, _ in parts]))
    cat = lambda f: np.concatenate([getattr(ep, f) for _, _, ep in parts])[inverse]  # noqa: E731
    source = np.concatenate([np.full(len(idx), j) for j, idx, _ in parts])[inverse]
    return ExperiencePool(cat("states"), cat("levels"), cat("qoe"), source, names)

"""A slippery gridworld as a KNOWN tabular MDP, and the exact tools that a known model allows.

The world (FrozenLake-like; states are cells, ``s = row·n + col``)::

    S . . . . . . .      S start            actions 0 left, 1 down, 2 right, 3 up
    . . . . . . . .      G goal (absorbing, reward 1 on entering it)
    . . H . . . H .      H hole (absorbing, reward 0)
    . . . . H . . .      a move into the wall leaves the agent where it is
    . H . . . . . .      slip: with probability ``slip`` the chosen action is replaced by a uniformly random one
    . . . H . . H .            (the chosen one included), so P(intended move) = 1 − slip + slip/4
    . . . . . H . .      an episode ends on entering G or H (terminal) or after ``horizon`` steps (truncated)
    . . H . . . . G

The model as arrays (float64, exact):

    P (S, A, S)   P[s, a, s'] = Pr(s' | s, a); goal and holes are absorbing (P[t, a, t] = 1)
    R (S, A)      R[s, a] = r_G · P[s, a, G] for non-terminal s, 0 at terminal states (the episode is over)
    ρ0 (S,)       all mass on the start cell

Exact tools (no sampling noise; a policy is a table ``(S, A)`` whose rows sum to 1, or a :class:`Mixture`):

    value_iteration      Q*(s,a) = r(s,a) + γ Σ_s' P(s'|s,a) (1 − done(s')) max_a' Q*(s',a'),  expert = greedy(Q*)
    soft_q_iteration     Q ← r + γ P^c V,  V(s) = τ log Σ_a exp(Q(s,a)/τ),  π = softmax(Q/τ)    (a few sweeps)
    policy_evaluation    V^π = (I − γ P_π^c)^{-1} r_π,  Q^π = r + γ P^c V^π,  and the occupancy below
    occupancy            d^π(s,a) = (1 − γ) Σ_t γ^t Pr(s_t = s, a_t = a)   (sums to 1; terminal states keep their mass)
    expected_return      E[Σ_{t<H} γ^t r_t] over the H-step episode (γ = 1 unless ``discounted``)

``P^c`` masks transitions into terminal states (V = 0 there), so a learned reward (a discriminator, a Q table)
never collects value after the episode has ended. A :class:`Mixture` picks ONE policy per episode (weights w),
so its return is Σ_j w_j R(π_j) and its (unnormalised) occupancy Σ_j w_j d^{π_j}.

Data: :func:`rollouts` samples episodes into :class:`labkit.substrates.rl.OfflineDataset` (all episodes at once,
vectorised); :func:`normalised_return` is D4RL's 100·(R − R_random)/(R_expert − R_random) with the EXACT returns
of the uniform policy and of the value-iteration expert. :func:`gym_env` puts the same MDP behind a
``gymnasium.Env`` (Discrete observations and actions) for Minari and library agents.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from labkit.substrates.rl import OfflineDataset

LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3
ACTION_NAMES = ("left", "down", "right", "up")
#: (d_row, d_col) of each action
MOVES = ((0, -1), (1, 0), (0, 1), (-1, 0))

#: the card's 8×8 map (AILBoost 21, Dual RL 29): 8 holes, a safe route along the top row and the right column
SLIPPERY_8X8 = (
    "S.......",
    "........",
    "..H...H.",
    "....H...",
    ".H......",
    "...H..H.",
    ".....H..",
    "..H....G",
)
#: LaMo's 7×7 single-goal grid (card 05): the only reward is 1 at G; 4 holes make failures possible
LAMO_7X7 = (
    "S......",
    ".......",
    "..H..H.",
    ".......",
    ".H...H.",
    ".......",
    "......G",
)


# --------------------------------------------------------------------------------------------- the MDP


@dataclass(frozen=True)
class GridWorld:
    """A known tabular MDP on an n×n grid. ``layout``: n strings of n characters, ``S`` start, ``G`` goal,
    ``H`` hole, ``.`` free. Build presets with :meth:`slippery_8x8`, :meth:`lamo_7x7`, :meth:`random`."""

    layout: tuple[str, ...]
    slip: float = 0.0
    horizon: int = 60
    gamma: float = 0.95
    goal_reward: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "layout", tuple(self.layout))
        n = len(self.layout)
        if n < 2 or any(len(row) != n for row in self.layout):
            lengths = [len(row) for row in self.layout]
            raise ValueError(f"layout must be n strings of n characters (n ≥ 2), got {n} rows of lengths {lengths}")
        text = "".join(self.layout)
        if set(text) - set("SGH."):
            raise ValueError(f"layout may only hold 'S', 'G', 'H', '.', found {sorted(set(text) - set('SGH.'))}")
        if text.count("S") != 1 or text.count("G") != 1:
            raise ValueError("layout needs exactly one 'S' (start) and one 'G' (goal)")
        if not 0.0 <= self.slip <= 1.0:
            raise ValueError(f"slip must be in [0, 1], got {self.slip}")
        if int(self.horizon) != self.horizon or self.horizon < 1:
            raise ValueError(f"horizon must be an integer ≥ 1, got {self.horizon}")
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma}")

    # presets -------------------------------------------------------------------------------------------

    @classmethod
    def slippery_8x8(cls, slip: float = 0.3, horizon: int = 60, gamma: float = 0.95, goal_reward: float = 1.0):
        """The card's world (AILBoost, Dual RL): 8×8, start (0,0), goal (7,7), 8 holes, slip 0.3, H 60, γ 0.95."""
        return cls(SLIPPERY_8X8, slip=slip, horizon=horizon, gamma=gamma, goal_reward=goal_reward)

    @classmethod
    def lamo_7x7(cls, slip: float = 0.1, horizon: int = 30, gamma: float = 0.99, goal_reward: float = 1.0):
        """LaMo's 7×7 grid: one goal reward at (6,6), 4 holes, slip 0.1, H 30 (the shortest path is 12 steps)."""
        return cls(LAMO_7X7, slip=slip, horizon=horizon, gamma=gamma, goal_reward=goal_reward)

    @classmethod
    def from_holes(cls, size: int, holes: Iterable[tuple[int, int]], **kwargs):
        """Start (0,0), goal (size−1, size−1) and holes at the given (row, col) cells."""
        grid = [["."] * size for _ in range(size)]
        for r, c in holes:
            if not (0 <= r < size and 0 <= c < size) or (r, c) in ((0, 0), (size - 1, size - 1)):
                raise ValueError(f"hole ({r}, {c}) is off the grid or on the start/goal")
            grid[r][c] = "H"
        grid[0][0], grid[-1][-1] = "S", "G"
        return cls(tuple("".join(row) for row in grid), **kwargs)

    @classmethod
    def random(cls, size: int, n_holes: int, seed: int = 0, **kwargs):
        """``n_holes`` holes drawn with ``numpy.random.default_rng(seed)`` (a fixed layout per seed), redrawn until
        the goal is reachable from the start. E.g. Dual RL's standard preset: ``GridWorld.random(12, 18, seed)``."""
        cells = [(r, c) for r in range(size) for c in range(size) if (r, c) not in ((0, 0), (size - 1, size - 1))]
        if not 0 <= n_holes <= len(cells) - (2 * size - 3):
            raise ValueError(f"n_holes must leave room for a path on a {size}×{size} grid, got {n_holes}")
        rng = np.random.default_rng(seed)
        for _ in range(10_000):
            picks = rng.choice(len(cells), size=n_holes, replace=False)
            world = cls.from_holes(size, [cells[i] for i in sorted(picks)], **kwargs)
            if world.shortest_path_length() is not None:
                return world
        raise RuntimeError("no layout with a path found")  # pragma: no cover - needs an absurd n_holes

    # geometry ------------------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.layout)

    @property
    def n_states(self) -> int:
        return self.size * self.size

    @property
    def n_actions(self) -> int:
        return 4

    def state(self, row: int, col: int) -> int:
        return row * self.size + col

    def cell(self, s: int) -> tuple[int, int]:
        return divmod(int(s), self.size)

    def _cells(self, char: str) -> tuple[int, ...]:
        return tuple(i for i, ch in enumerate("".join(self.layout)) if ch == char)

    @property
    def start(self) -> int:
        return self._cells("S")[0]

    @property
    def goal(self) -> int:
        return self._cells("G")[0]

    @property
    def holes(self) -> tuple[int, ...]:
        return self._cells("H")

    @functools.cached_property
    def terminal(self) -> np.ndarray:
        """``(S,)`` bool: the goal and the holes (absorbing; an episode ends on entering one)."""
        done = np.zeros(self.n_states, dtype=bool)
        done[[self.goal, *self.holes]] = True
        return done

    @functools.cached_property
    def rho0(self) -> np.ndarray:
        """``(S,)`` the start distribution (all mass on S)."""
        rho = np.zeros(self.n_states)
        rho[self.start] = 1.0
        return rho

    def coordinates(self, states) -> np.ndarray:
        """``(..., 2)`` float32 (row, col) / (n − 1) in [0, 1]: a compact input for neural policies."""
        s = np.asarray(states)
        return (np.stack([s // self.size, s % self.size], -1) / (self.size - 1)).astype(np.float32)

    def _move(self, s: int, a: int) -> int:
        r, c = self.cell(s)
        dr, dc = MOVES[a]
        r2, c2 = r + dr, c + dc
        return self.state(r2, c2) if 0 <= r2 < self.size and 0 <= c2 < self.size else s

    # the model -----------------------------------------------------------------------------------------

    @functools.cached_property
    def P(self) -> np.ndarray:
        """``(S, A, S)`` transition tensor; terminal states are absorbing."""
        S, A = self.n_states, self.n_actions
        P = np.zeros((S, A, S))
        for s in range(S):
            if self.terminal[s]:
                P[s, :, s] = 1.0
                continue
            for a in range(A):
                # the chosen action with probability 1 − slip, a uniformly random one with probability slip
                P[s, a, self._move(s, a)] += 1.0 - self.slip
                for b in range(A):
                    P[s, a, self._move(s, b)] += self.slip / A
        P.setflags(write=False)
        return P

    @functools.cached_property
    def R(self) -> np.ndarray:
        """``(S, A)`` expected reward: r_G · Pr(s' = G | s, a) from non-terminal s, 0 at terminal states."""
        R = self.goal_reward * self.P[:, :, self.goal] * ~self.terminal[:, None]
        R.setflags(write=False)
        return R

    @functools.cached_property
    def P_continue(self) -> np.ndarray:
        """``(S, A, S)`` P with the columns of terminal states zeroed: Σ_s' P^c V(s') treats V(terminal) = 0."""
        Pc = self.P * ~self.terminal[None, None, :]
        Pc.setflags(write=False)
        return Pc

    def shortest_path_length(self) -> int | None:
        """Fewest steps from S to G avoiding holes (breadth-first search, no slip); None when G is unreachable."""
        dist = {self.start: 0}
        queue = deque([self.start])
        while queue:
            s = queue.popleft()
            if s == self.goal:
                return dist[s]
            if self.terminal[s]:
                continue
            for a in range(self.n_actions):
                s2 = self._move(s, a)
                if s2 not in dist:
                    dist[s2] = dist[s] + 1
                    queue.append(s2)
        return None

    def render(self, values=None, decimals: int = 2) -> str:
        """The map as text; with ``values (S,)`` each cell shows its number instead (terminal cells keep S/G/H)."""
        if values is None:
            return "\n".join(" ".join(row) for row in self.layout)
        v = np.asarray(values, dtype=float).reshape(-1)
        width = decimals + 4
        rows = []
        for r, line in enumerate(self.layout):
            cells = [
                ch.rjust(width) if ch in "GH" else f"{v[self.state(r, c)]:{width}.{decimals}f}"
                for c, ch in enumerate(line)
            ]
            rows.append(" ".join(cells))
        return "\n".join(rows)


# --------------------------------------------------------------------------------------------- policies


@dataclass(frozen=True, eq=False)
class Mixture:
    """A per-episode mixture: at the start of each episode pick policy j with probability ``weights[j]`` and
    follow it to the end. ``policies (J, S, A)``, ``weights (J,)`` (non-negative, summing to 1)."""

    policies: np.ndarray
    weights: np.ndarray

    def __post_init__(self):
        pols = np.stack([_table(p) for p in self.policies]) if len(self.policies) else np.zeros((0, 1, 1))
        w = np.asarray(self.weights, dtype=np.float64).reshape(-1)
        if pols.ndim != 3 or len(pols) == 0 or len(w) != len(pols):
            raise ValueError(f"need J ≥ 1 policy tables (J, S, A) and J weights, got {pols.shape} and {w.shape}")
        if (w < 0).any() or abs(w.sum() - 1.0) > 1e-6:
            raise ValueError(f"weights must be non-negative and sum to 1, got sum {w.sum():.6g}")
        object.__setattr__(self, "policies", pols)
        object.__setattr__(self, "weights", w / w.sum())

    def __len__(self) -> int:
        return len(self.weights)


def _array(x) -> np.ndarray:
    """A numpy float64 copy of an array or a (CPU or GPU, maybe grad-carrying) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _table(policy) -> np.ndarray:
    """A validated ``(S, A)`` stochastic policy table (rows non-negative, summing to 1)."""
    pi = _array(policy)
    if pi.ndim != 2:
        raise ValueError(f"a policy table is (S, A), got shape {pi.shape}")
    if (pi < -1e-12).any() or np.abs(pi.sum(1) - 1.0).max() > 1e-6:
        raise ValueError("a policy table's rows must be probabilities (non-negative, summing to 1)")
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum(1, keepdims=True)


def _components(policy) -> tuple[np.ndarray, np.ndarray]:
    """``(J, S, A)`` tables and ``(J,)`` weights of a table (J = 1) or a Mixture."""
    if isinstance(policy, Mixture):
        return policy.policies, policy.weights
    return _table(policy)[None], np.ones(1)


def _check_shape(mdp: GridWorld, table: np.ndarray, what: str = "policy") -> None:
    if table.shape[-2:] != (mdp.n_states, mdp.n_actions):
        raise ValueError(f"{what} must be ({mdp.n_states}, {mdp.n_actions}) for this grid, got {table.shape}")


def uniform_policy(mdp: GridWorld) -> np.ndarray:
    """``(S, A)`` the uniformly random policy (the D4RL "random" reference)."""
    return np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)


def greedy(q, valid=None) -> np.ndarray:
    """``(S, A)`` one-hot argmax of ``q (S, A)`` (ties → the lowest action index). ``valid (S, A)`` bool restricts
    the argmax to allowed actions (e.g. those seen in the data); rows with none allowed use all actions."""
    q = _array(q)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        valid = valid | ~valid.any(1, keepdims=True)
        q = np.where(valid, q, -np.inf)
    pi = np.zeros_like(q)
    pi[np.arange(len(q)), q.argmax(1)] = 1.0
    return pi


def softmax_policy(q, temperature: float) -> np.ndarray:
    """``(S, A)`` π(a|s) = exp(Q(s,a)/τ) / Σ_b exp(Q(s,b)/τ)."""
    z = _array(q) / temperature
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def noisy_policy(policy, epsilon: float) -> np.ndarray:
    """``(S, A)`` the ε-noisy version of a table: π_ε = (1 − ε)·π + ε·uniform (each step, a random action w.p. ε)."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    pi = _table(policy)
    return (1.0 - epsilon) * pi + epsilon / pi.shape[1]


def mixture(policies: Sequence, weights: Sequence[float]) -> Mixture:
    """A per-episode :class:`Mixture` of policy tables (see its docstring)."""
    return Mixture(np.stack([_table(p) for p in policies]), np.asarray(weights, dtype=np.float64))


# --------------------------------------------------------------------------------------------- exact tools


@dataclass(frozen=True, eq=False)
class QSolution:
    """``q (S, A)``, ``v (S,)`` and the policy ``(S, A)`` they define (greedy or softmax)."""

    q: np.ndarray
    v: np.ndarray
    policy: np.ndarray
    sweeps: int


def _reward(mdp: GridWorld, reward) -> np.ndarray:
    """The ``(S, A)`` reward (``mdp.R`` by default) with terminal rows set to 0 (the episode is over there)."""
    r = mdp.R if reward is None else _array(reward)
    _check_shape(mdp, r, "reward")
    return r * ~mdp.terminal[:, None]


def value_iteration(mdp: GridWorld, reward=None, *, tol: float = 1e-12, max_sweeps: int = 100_000) -> QSolution:
    """Optimal Q*, V* and the greedy (expert) policy for ``reward (S, A)`` (default: the MDP's own)."""
    r = _reward(mdp, reward)
    q, sweeps, delta = np.zeros_like(r), 0, np.inf
    while delta >= tol and sweeps < max_sweeps:
        # Q(s,a) ← r(s,a) + γ Σ_s' P^c(s'|s,a) max_a' Q(s',a')            (V = 0 at terminal states)
        q_new = r + mdp.gamma * mdp.P_continue @ q.max(1)
        delta, q, sweeps = np.abs(q_new - q).max(), q_new, sweeps + 1
    return QSolution(q=q, v=q.max(1), policy=greedy(q), sweeps=sweeps)


def soft_q_iteration(mdp: GridWorld, reward, temperature: float, sweeps: int, q0=None) -> QSolution:
    """``sweeps`` sweeps of soft (max-entropy) Q-iteration from ``q0`` (default zeros) — AILBoost's weak learner:
        V(s) = τ log Σ_a exp(Q(s,a)/τ),   Q(s,a) ← r(s,a) + γ Σ_s' P^c(s'|s,a) V(s'),   π = softmax(Q/τ)
    ``reward``, ``q0``: ``(S, A)`` arrays or torch tensors. Returns numpy float64."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    r = _reward(mdp, reward)
    q = np.zeros_like(r) if q0 is None else _array(q0).copy()
    _check_shape(mdp, q, "q0")
    for _ in range(sweeps):
        # V(s) = τ · logsumexp_a(Q(s,a)/τ), computed stably
        v = _soft_v(q, temperature)
        q = r + mdp.gamma * mdp.P_continue @ v
    return QSolution(q=q, v=_soft_v(q, temperature), policy=softmax_policy(q, temperature), sweeps=sweeps)


def _soft_v(q: np.ndarray, tau: float) -> np.ndarray:
    m = q.max(1)
    return m + tau * np.log(np.exp((q - m[:, None]) / tau).sum(1))


@dataclass(frozen=True, eq=False)
class PolicyEvaluation:
    """Exact ``v (S,)``, ``q (S, A)`` of a stationary policy, and its normalised discounted occupancy
    ``occupancy (S, A)`` (infinite horizon, sums to 1; see :func:`occupancy`)."""

    v: np.ndarray
    q: np.ndarray
    occupancy: np.ndarray


def _policy_matrix(mdp: GridWorld, pi: np.ndarray, P: np.ndarray) -> np.ndarray:
    """P_π(s, s') = Σ_a π(a|s) P(s'|s,a)   ``(S, S)``."""
    return np.einsum("sa,sat->st", pi, P)


def policy_evaluation(mdp: GridWorld, policy, reward=None) -> PolicyEvaluation:
    """V^π, Q^π (terminal states: V = 0) and d^π for a table ``(S, A)`` (a Mixture: use :func:`occupancy`,
    :func:`expected_return`; a mixture has no single V)."""
    pi = _table(policy)
    _check_shape(mdp, pi)
    r = _reward(mdp, reward)
    # V^π = (I − γ P_π^c)^{-1} r_π,   r_π(s) = Σ_a π(a|s) r(s,a)
    v = np.linalg.solve(np.eye(mdp.n_states) - mdp.gamma * _policy_matrix(mdp, pi, mdp.P_continue), (pi * r).sum(1))
    # Q^π(s,a) = r(s,a) + γ Σ_s' P^c(s'|s,a) V^π(s')
    q = r + mdp.gamma * mdp.P_continue @ v
    return PolicyEvaluation(v=v, q=q, occupancy=occupancy(mdp, pi))


def _measure(mdp: GridWorld, pi: np.ndarray, gamma: float, horizon: int | None) -> np.ndarray:
    """Unnormalised Σ_t γ^t Pr(s_t = s, a_t = a) ``(S, A)``; terminal states absorb (and keep) their mass."""
    if horizon is None:
        # μ = Σ_t γ^t ρ0ᵀ P_π^t  solves  (I − γ P_πᵀ) μ = ρ0
        mu = np.linalg.solve(np.eye(mdp.n_states) - gamma * _policy_matrix(mdp, pi, mdp.P).T, mdp.rho0)
    else:
        Ppi, state, mu = _policy_matrix(mdp, pi, mdp.P), mdp.rho0.copy(), np.zeros(mdp.n_states)
        for t in range(horizon):
            mu += gamma**t * state
            state = state @ Ppi
    return mu[:, None] * pi


def occupancy(
    mdp: GridWorld,
    policy,
    *,
    gamma: float | None = None,
    horizon: int | None = None,
    include_terminal: bool = True,
    normalise: bool = True,
) -> np.ndarray:
    """State-action occupancy ``(S, A)`` of a table or a per-episode :class:`Mixture`:

        m(s,a) = Σ_{t < horizon} γ^t Pr(s_t = s, a_t = a)           (horizon None: t runs to ∞; γ default mdp.gamma)

    ``normalise`` divides by its total: with the defaults that is d^π = (1 − γ)·m, the textbook occupancy
    (unnormalised it sums to 1/(1 − γ)). ``include_terminal=False`` drops the mass sitting in the goal/holes after
    the episode ended (renormalised over the rest): with ``gamma=1, horizon=mdp.horizon`` that is the distribution
    of (s, a) pairs in a pool of rollouts, E[count(s,a)] / E[episode length]. A Mixture's unnormalised measure is
    Σ_j w_j m_j (episodes are mixed, not steps), normalised after."""
    gamma = mdp.gamma if gamma is None else float(gamma)
    if horizon is None and not 0.0 < gamma < 1.0:
        raise ValueError("an infinite-horizon occupancy needs gamma in (0, 1); pass horizon= for gamma = 1")
    tables, weights = _components(policy)
    _check_shape(mdp, tables)
    m = sum(w * _measure(mdp, pi, gamma, horizon) for pi, w in zip(tables, weights))
    if not include_terminal:
        m = m * ~mdp.terminal[:, None]
    return m / m.sum() if normalise else m


def expected_return(mdp: GridWorld, policy, *, reward=None, discounted: bool = False) -> float:
    """Exact E[Σ_{t<H} γ^t r_t] of an H = ``mdp.horizon`` step episode (γ = 1 unless ``discounted``), for a table
    or a per-episode Mixture (Σ_j w_j R(π_j)). With the MDP's reward and γ = 1 this is Pr(reach G within H)·r_G."""
    tables, weights = _components(policy)
    _check_shape(mdp, tables)
    r = _reward(mdp, reward)
    gamma = mdp.gamma if discounted else 1.0
    return float(sum(w * (_measure(mdp, pi, gamma, mdp.horizon) * r).sum() for pi, w in zip(tables, weights)))


def tv_distance(p, q) -> float:
    """Total variation ½ Σ |p − q| between two distributions of the same shape (e.g. occupancies)."""
    return 0.5 * float(np.abs(_array(p) - _array(q)).sum())


def expert_policy(mdp: GridWorld) -> np.ndarray:
    """``(S, A)`` the value-iteration greedy policy (deterministic, optimal for the discounted MDP)."""
    return value_iteration(mdp).policy


@functools.lru_cache(maxsize=64)
def reference_returns(mdp: GridWorld) -> tuple[float, float]:
    """(R_random, R_expert): exact undiscounted H-step returns of the uniform policy and of the expert."""
    return expected_return(mdp, uniform_policy(mdp)), expected_return(mdp, expert_policy(mdp))


def normalised_return(mdp: GridWorld, ret, scale: float = 100.0):
    """D4RL's score: scale·(R − R_random)/(R_expert − R_random) with the exact references (0 = random, scale =
    expert; the cards' 0–1 numbers are ``scale=1``). ``ret`` a float or an array of undiscounted returns."""
    low, high = reference_returns(mdp)
    out = scale * (np.asarray(ret, dtype=np.float64) - low) / (high - low)
    return float(out) if out.ndim == 0 else out


def count_policy(data: OfflineDataset, mdp: GridWorld) -> np.ndarray:
    """Tabular behaviour cloning ``(S, A)``: π(a|s) = count(s, a)/count(s), uniform where s never appears."""
    counts = data.state_action_counts(mdp.n_states, mdp.n_actions)
    seen = counts.sum(1, keepdims=True)
    return np.where(seen > 0, counts / np.maximum(seen, 1), 1.0 / mdp.n_actions)


# --------------------------------------------------------------------------------------------- data


def _draw(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs (N, K)`` by inverting the CDF at ``u (N,)``."""
    return np.minimum((probs.cumsum(1) < u[:, None]).sum(1), probs.shape[1] - 1)


def rollouts(mdp: GridWorld, policy, n_episodes: int, generator=0, *, behaviour: str = "") -> OfflineDataset:
    """``n_episodes`` episodes of a table or a per-episode :class:`Mixture`, sampled from the model (vectorised over
    episodes). ``generator``: a ``numpy.random.Generator`` or an int seed. Observations are state indices (int64);
    the recorded action is the one CHOSEN (a slip happens inside the dynamics); reward r_G on entering G; an
    episode is ``terminal`` on entering G or a hole and ``truncated`` after ``mdp.horizon`` steps otherwise."""
    rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
    tables, weights = _components(policy)
    _check_shape(mdp, tables)
    which = rng.choice(len(weights), size=n_episodes, p=weights) if len(weights) > 1 else np.zeros(n_episodes, int)
    state = np.full(n_episodes, mdp.start)
    alive = np.arange(n_episodes)
    cols: dict[str, list] = {k: [] for k in ("ep", "s", "a", "r", "s2", "term", "trunc")}
    for t in range(mdp.horizon):
        if len(alive) == 0:
            break
        s = state[alive]
        a = _draw(tables[which[alive], s], rng.random(len(alive)))
        s2 = _draw(mdp.P[s, a], rng.random(len(alive)))
        term = mdp.terminal[s2]
        for key, val in zip(
            cols,
            (alive, s, a, mdp.goal_reward * (s2 == mdp.goal), s2, term, ~term & (t == mdp.horizon - 1)),
        ):
            cols[key].append(val)
        state[alive] = s2
        alive = alive[~term]
    ep = np.concatenate(cols["ep"])
    order = np.argsort(ep, kind="stable")  # steps were appended in time order, so this keeps each episode's order
    lengths = np.bincount(ep, minlength=n_episodes)
    cat = {k: np.concatenate(v)[order] for k, v in cols.items()}
    return OfflineDataset(
        observations=cat["s"].astype(np.int64),
        actions=cat["a"].astype(np.int64),
        rewards=cat["r"].astype(np.float32),
        next_observations=cat["s2"].astype(np.int64),
        terminals=cat["term"].astype(bool),
        truncations=cat["trunc"].astype(bool),
        episode_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        env_id=f"gridworld-{mdp.size}x{mdp.size}",
        behaviour=behaviour,
    )


# --------------------------------------------------------------------------------------------- gymnasium face

#: named layouts that :func:`make_grid_env` (and the registered gymnasium ids in labkit.substrates.rl) build
PRESETS = {"slippery_8x8": GridWorld.slippery_8x8, "lamo_7x7": GridWorld.lamo_7x7}


@functools.cache
def _grid_env_class():
    import gymnasium as gym

    class GridEnv(gym.Env):
        """The :class:`GridWorld` behind gymnasium's API: Discrete(S) observations (the state index), Discrete(4)
        actions, reward r_G on entering G, ``terminated`` on entering G or a hole, ``truncated`` after H steps.
        ``info["cell"]`` is (row, col). Sampling uses ``self.np_random`` (seed it with ``reset(seed=...)``)."""

        metadata = {"render_modes": ["ansi"]}

        def __init__(self, mdp: GridWorld, render_mode: str | None = None):
            self.mdp = mdp
            self.observation_space = gym.spaces.Discrete(mdp.n_states)
            self.action_space = gym.spaces.Discrete(mdp.n_actions)
            self.render_mode = render_mode
            self._state = mdp.start
            self._t = 0

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self._state, self._t = self.mdp.start, 0
            return np.int64(self._state), {"cell": self.mdp.cell(self._state)}

        def step(self, action):
            a = int(action)
            if not 0 <= a < self.mdp.n_actions:
                raise ValueError(f"action must be in [0, {self.mdp.n_actions}), got {action}")
            s2 = int(_draw(self.mdp.P[self._state, a][None], self.np_random.random(1))[0])
            self._state, self._t = s2, self._t + 1
            terminated = bool(self.mdp.terminal[s2])
            truncated = not terminated and self._t >= self.mdp.horizon
            reward = float(self.mdp.goal_reward) if s2 == self.mdp.goal else 0.0
            return np.int64(s2), reward, terminated, truncated, {"cell": self.mdp.cell(s2)}

        def render(self):
            r, c = self.mdp.cell(self._state)
            rows = [list(row) for row in self.mdp.layout]
            rows[r][c] = "@"
            return "\n".join(" ".join(row) for row in rows)

    return GridEnv


def __getattr__(name: str):
    # PEP 562: ``GridEnv`` is built on first use (gymnasium is optional) and resolves for gymnasium's specs
    if name == "GridEnv":
        return _grid_env_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gym_env(mdp: GridWorld, render_mode: str | None = None):
    """A ``gymnasium.Env`` of ``mdp`` (needs the optional ``gymnasium`` package)."""
    return _grid_env_class()(mdp, render_mode=render_mode)


def make_grid_env(preset: str = "slippery_8x8", render_mode: str | None = None, **overrides):
    """Entry point of the registered ids (``labkit/GridWorld8x8-v0``, ``labkit/GridWorld7x7-v0``): the named
    preset with keyword overrides (slip, horizon, gamma, goal_reward)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown grid preset {preset!r}; known: {sorted(PRESETS)}")
    return gym_env(PRESETS[preset](**overrides), render_mode=render_mode)

"""Pendulum-v1, vectorised in torch, with optional distracting state dimensions, and its value function.

The dynamics are gymnasium's ``Pendulum-v1`` (g = 10, m = l = 1, dt = 0.05, max speed 8, max torque 2), written so
that a whole batch steps at once (tests/test_vagram.py checks them step by step against ``gymnasium.make``):

    u ← clip(u, −2, 2)
    r = −(wrap(θ)² + 0.1·θ̇² + 0.001·u²)                      (reward of the state *before* the step)
    θ̇' = clip(θ̇ + (3g/(2l)·sin θ + 3/(m l²)·u)·dt, −8, 8)
    θ' = θ + θ̇'·dt
    observation  o = [cos θ, sin θ, θ̇]

Distractors (the VaGraM paper's stress test): D extra dimensions z with their own dynamics, z' = 2·tanh(A z),
A ~ N(0, 1)/√D · 1.5 fixed per seed, that neither the reward nor the pendulum depends on. The full state is
s = [cos θ, sin θ, θ̇, z] ∈ R^{3+D}.

Value function: value iteration on a (θ, θ̇) grid with a few discrete torques and bilinear interpolation (θ wraps),
then a small tanh MLP fitted to the grid values (:class:`ValueNet`), smooth enough for ∇_s V.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

G, MASS, LENGTH, DT = 10.0, 1.0, 1.0, 0.05
MAX_SPEED, MAX_TORQUE = 8.0, 2.0
N_PENDULUM = 3  # [cos θ, sin θ, θ̇]


def wrap(theta):
    """θ into [−π, π) (gymnasium's ``angle_normalize``)."""
    return ((theta + math.pi) % (2 * math.pi)) - math.pi


def reward(theta: torch.Tensor, theta_dot: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """r = −(wrap(θ)² + 0.1·θ̇² + 0.001·u²), u clipped to ±2; any shape (broadcast)."""
    u = u.clamp(-MAX_TORQUE, MAX_TORQUE)
    return -(wrap(theta) ** 2 + 0.1 * theta_dot**2 + 0.001 * u**2)


def step(theta: torch.Tensor, theta_dot: torch.Tensor, u: torch.Tensor):
    """One Pendulum-v1 step for a batch: returns (θ', θ̇', r), each the broadcast shape of the inputs."""
    u = u.clamp(-MAX_TORQUE, MAX_TORQUE)
    r = reward(theta, theta_dot, u)
    # θ̇' = clip(θ̇ + (3g/(2l)·sin θ + 3/(m l²)·u)·dt, −8, 8);  θ' = θ + θ̇'·dt
    new_dot = theta_dot + (3 * G / (2 * LENGTH) * torch.sin(theta) + 3.0 / (MASS * LENGTH**2) * u) * DT
    new_dot = new_dot.clamp(-MAX_SPEED, MAX_SPEED)
    return theta + new_dot * DT, new_dot, r


def observe(theta: torch.Tensor, theta_dot: torch.Tensor) -> torch.Tensor:
    """(..., 3) observation [cos θ, sin θ, θ̇]."""
    return torch.stack([torch.cos(theta), torch.sin(theta), theta_dot], dim=-1)


def angle_of(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ, θ̇) back from a (..., ≥3) state."""
    return torch.atan2(obs[..., 1], obs[..., 0]), obs[..., 2]


# --------------------------------------------------------------------------------------------- distractors


def distractor_matrix(n: int, seed: int) -> torch.Tensor:
    """A ~ N(0, 1)/√D · 1.5, (D, D), fixed by ``seed``."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    return torch.randn(n, n, generator=gen) / math.sqrt(max(n, 1)) * 1.5


def distractor_step(z: torch.Tensor, a_matrix: torch.Tensor) -> torch.Tensor:
    """z' = 2·tanh(A z) for a batch z (..., D)."""
    return 2.0 * torch.tanh(z @ a_matrix.T)


def distractor_step_batched(z: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """z' = 2·tanh(A_k z) with one matrix per leading index: z (K, E, D), mats (K, D, D)."""
    return 2.0 * torch.tanh(torch.einsum("ked,kfd->kef", z, mats))


@dataclass(frozen=True)
class Transitions:
    """N transitions of the pendulum with D distractors: s, s2 (N, 3+D), a (N, 1), r (N,)."""

    s: torch.Tensor
    a: torch.Tensor
    r: torch.Tensor
    s2: torch.Tensor

    def __len__(self) -> int:
        return self.s.shape[0]


def sample_transitions(n: int, a_matrix: torch.Tensor, generator: torch.Generator) -> Transitions:
    """θ ~ U[−π, π), θ̇ ~ U[−8, 8], u ~ U[−2, 2], z ~ N(0, I_D); one true step each."""
    theta = (torch.rand(n, generator=generator) * 2 - 1) * math.pi
    theta_dot = (torch.rand(n, generator=generator) * 2 - 1) * MAX_SPEED
    u = (torch.rand(n, generator=generator) * 2 - 1) * MAX_TORQUE
    z = torch.randn(n, a_matrix.shape[0], generator=generator)
    th2, dot2, r = step(theta, theta_dot, u)
    s = torch.cat([observe(theta, theta_dot), z], dim=-1)
    s2 = torch.cat([observe(th2, dot2), distractor_step(z, a_matrix)], dim=-1)
    return Transitions(s, u[:, None], r, s2)


# --------------------------------------------------------------------------------------------- value function


@dataclass(frozen=True)
class ValueGrid:
    """V on an n × n grid: ``theta`` (n,) over [−π, π], ``theta_dot`` (n,) over [−8, 8], ``values`` (n, n)."""

    theta: np.ndarray
    theta_dot: np.ndarray
    values: np.ndarray
    gamma: float

    def __call__(self, theta, theta_dot) -> np.ndarray:
        return bilinear(self, theta, theta_dot, self.values)


def bilinear(grid: ValueGrid, theta, theta_dot, values) -> np.ndarray:
    """Bilinear interpolation of ``values`` (n, n) at (θ, θ̇); θ wraps, θ̇ is clipped to the grid."""
    n, m = len(grid.theta), len(grid.theta_dot)
    x = (np.asarray(wrap(np.asarray(theta))) + math.pi) / (2 * math.pi) * (n - 1)
    y = (np.clip(theta_dot, -MAX_SPEED, MAX_SPEED) + MAX_SPEED) / (2 * MAX_SPEED) * (m - 1)
    i, j = np.clip(np.floor(x).astype(int), 0, n - 2), np.clip(np.floor(y).astype(int), 0, m - 2)
    fx, fy = x - i, y - j
    v00, v01 = values[i, j], values[i, j + 1]
    v10, v11 = values[i + 1, j], values[i + 1, j + 1]
    return (1 - fx) * ((1 - fy) * v00 + fy * v01) + fx * ((1 - fy) * v10 + fy * v11)


def value_iteration(n_grid: int, n_torques: int, gamma: float, sweeps: int) -> ValueGrid:
    """V(θ, θ̇) ← max_u [r(θ, θ̇, u) + γ·V(θ', θ̇')] on the grid, ``sweeps`` times (θ = ±π are the same state)."""
    theta = np.linspace(-math.pi, math.pi, n_grid)
    theta_dot = np.linspace(-MAX_SPEED, MAX_SPEED, n_grid)
    torques = np.linspace(-MAX_TORQUE, MAX_TORQUE, n_torques)
    th, dot, u = np.meshgrid(theta, theta_dot, torques, indexing="ij")  # (n, n, U)
    th2, dot2, r = (t.numpy() for t in step(torch.from_numpy(th), torch.from_numpy(dot), torch.from_numpy(u)))
    grid = ValueGrid(theta, theta_dot, np.zeros((n_grid, n_grid)), gamma)
    values = grid.values
    for _ in range(sweeps):
        values = (r + gamma * bilinear(grid, th2, dot2, values)).max(-1)
        values[-1] = values[0] = 0.5 * (values[0] + values[-1])  # θ = −π and θ = π are one state
    return ValueGrid(theta, theta_dot, values, gamma)


class ValueNet(nn.Module):
    """V(s) from the pendulum part of a state: tanh MLP on (cos θ, sin θ, θ̇/8), output in value units."""

    def __init__(self, width: int = 64, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1)
        )
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("shift", torch.tensor(float(shift)))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """(..., ≥3) states → (...) values; only the first three coordinates are read (V ignores distractors)."""
        x = torch.stack([s[..., 0], s[..., 1], s[..., 2] / MAX_SPEED], dim=-1)
        return self.net(x).squeeze(-1) * self.scale + self.shift


def fit_value_net(grid: ValueGrid, *, width: int, steps: int, lr: float, seed: int, on_step=None) -> ValueNet:
    """Fit :class:`ValueNet` to the grid values by full-batch Adam on the standardised squared error."""
    torch.manual_seed(seed)
    th, dot = np.meshgrid(grid.theta, grid.theta_dot, indexing="ij")
    obs = observe(torch.tensor(th.ravel(), dtype=torch.float32), torch.tensor(dot.ravel(), dtype=torch.float32))
    target = torch.tensor(grid.values.ravel(), dtype=torch.float32)
    net = ValueNet(width, scale=float(target.std()), shift=float(target.mean()))
    opt = torch.optim.Adam(net.net.parameters(), lr=lr)
    z = (target - net.shift) / net.scale
    for k in range(steps):
        pred = net.net(torch.stack([obs[:, 0], obs[:, 1], obs[:, 2] / MAX_SPEED], -1)).squeeze(-1)
        loss = ((pred - z) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(k, loss)
    return net.requires_grad_(False)

"""AILBoost — arXiv 2404.08513 (Chang, Sreenivas, Huang, Brantley, Sun; ICLR 2024). Adversarial imitation as boosting.

Off-policy adversarial imitation (DAC) trains its discriminator on a replay buffer that mixes ALL past policies
equally, so it does not measure the gap between the current behaviour and the expert. AILBoost keeps a weighted
ensemble of "weak learner" policies and a replay buffer weighted with exactly the same weights, so the buffer IS a
sample of the ensemble's state-action distribution, and the discriminator measures the ensemble-vs-expert gap.

Ensemble (a per-EPISODE mixture: pick learner j with probability w_j, follow it to the end of the episode):

    d^mix = Σ_j w_j d^{π_j},            when learner t+1 joins:  w_j ← (1 − η)·w_j  (j ≤ t),   w_{t+1} = η
    so after T learners   w_1 = (1 − η)^{T−1},   w_j = η·(1 − η)^{T−j}  (j ≥ 2),   Σ_j w_j = 1

Objective (reverse KL, the code's default): minimise ℓ(d) = KL(d ‖ d^E) over mixtures d. Its functional gradient
is log(d/d^E) + 1, so the next weak learner should maximise the reward r* = log d^E − log d^mix, which the
discriminator estimates (variational form; at the optimum D* = log(d^E/d^mix)):

    L_D = E_{(s,a)~D_E}[exp(−D(s,a))] + E_{(s,a)~B_w}[D(s,a)]          B_w: the weighted replay buffer

The tabular toy replaces the gradient penalty by λ·mean(D²) over the batch and clamps D to [−c, c] inside the loss
(D* is ±∞ where one side has no mass). DAC's discriminator is the binary classifier (GAIL's "js" loss)

    L_D^js = −E_{D_E}[log σ(D)] − E_{B_u}[log(1 − σ(D))]                B_u: a UNIFORM replay buffer

whose optimum is also D* = log(d^E/d^B) (the logit), but d^B is the average of every past policy.

The official code (github.com/Cornell-RL/ailboost) ends its discriminator MLP with tanh, so there D ∈ (−1, 1) and
the gradient penalty (coefficient 10) does the rest; the tabular D here has neither, hence the clamp and λ.

One boosting round (the official loop, the weak learner made tabular):
    π_{t} ← a few soft Q-iteration sweeps on r = D, warm-started from the previous Q     (the weak learner)
    collect N_s fresh steps with π_t into a new buffer slot;   w ← (1 − η)·w, append η
    K_D Adam steps on L_D with batches: B from the buffer (slot ~ w, then a uniform step inside it), B from D_E
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from labkit.substrates import gridworld as gw

# --------------------------------------------------------------------------------------------- the ensemble weights


def boosting_weights(weights: Tensor, eta: float) -> Tensor:
    """The weights after one more learner joins: ``weights (J,)`` → ``(J + 1,)`` (``(0,)`` → ``[1]``)."""
    if len(weights) == 0:
        # the first learner is the whole ensemble
        return torch.ones(1, dtype=torch.float64)
    # w_j ← (1 − η)·w_j for the old learners, w_{J+1} = η for the new one
    return torch.cat([(1.0 - eta) * weights, torch.full((1,), eta, dtype=weights.dtype)])


def closed_form_weights(n_learners: int, eta: float) -> Tensor:
    """``(T,)`` the weights after T rounds without the recursion (the oldest learner keeps the rest)."""
    j = torch.arange(1, n_learners + 1, dtype=torch.float64)
    # w_j = η·(1 − η)^{T−j} for j ≥ 2
    w = eta * (1.0 - eta) ** (n_learners - j)
    # w_1 = (1 − η)^{T−1}
    w[0] = (1.0 - eta) ** (n_learners - 1)
    return w


def slot_size_weights(sizes: Tensor) -> Tensor:
    """DAC's uniform buffer as slot weights: every stored step is equally likely, so w_j = N_j / Σ_k N_k."""
    return sizes.to(torch.float64) / sizes.sum()


# --------------------------------------------------------------------------------------------- the replay buffer


@dataclass
class ReplayBuffer:
    """One slot per learner, each holding that learner's own (s, a) pairs as flat indices ``s·A + a``.
    ``weights (J,)`` are the slot probabilities: the boosting weights (AILBoost) or the slot sizes (DAC)."""

    slots: list[Tensor] = field(default_factory=list)
    weights: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))

    @property
    def sizes(self) -> Tensor:
        return torch.tensor([len(s) for s in self.slots], dtype=torch.int64)

    def add_slot(self, pairs: Tensor) -> None:
        """A new slot of ``(N_s,)`` flat (s, a) indices (the weights are set by the caller)."""
        self.slots.append(pairs.to(torch.int64))

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``(n,)`` flat (s, a) indices: a slot j ~ w, then a uniform step inside slot j."""
        if len(self.slots) == 0 or len(self.weights) != len(self.slots):
            raise ValueError(f"{len(self.slots)} slots but {len(self.weights)} weights: set the weights first")
        sizes = self.sizes
        # j ~ Categorical(w)                                                                         (n,)
        slot = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        # a uniform position inside slot j: ⌊u·N_j⌋, u ~ U[0, 1)                                      (n,)
        pos = (torch.rand(n, generator=generator, dtype=torch.float64) * sizes[slot]).long()
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)[:-1]])
        return torch.cat(self.slots)[offsets[slot] + pos]

    def distribution(self, n_pairs: int) -> Tensor:
        """``(n_pairs,)`` the exact sampling distribution: Σ_j w_j · (empirical distribution of slot j)."""
        out = torch.zeros(n_pairs, dtype=torch.float64)
        for w, slot in zip(self.weights, self.slots):
            out += w * torch.bincount(slot, minlength=n_pairs).to(torch.float64) / len(slot)
        return out


# --------------------------------------------------------------------------------------------- the discriminator


def rkl_discriminator_loss(d_expert: Tensor, d_buffer: Tensor, reg: float, bound: float) -> Tensor:
    """AILBoost's loss (reverse KL). ``d_expert (..., B)``, ``d_buffer (..., B)``: D at B expert pairs and B
    buffer pairs (the leading dims are independent runs) → ``(...)``."""
    de, db = d_expert.clamp(-bound, bound), d_buffer.clamp(-bound, bound)
    # L_D = E_{D_E}[exp(−D)] + E_{B_w}[D]   (D clamped to [−c, c] inside the loss)
    loss = torch.exp(-de).mean(-1) + db.mean(-1)
    # + λ·mean(D²) over both batches (the tabular stand-in for the gradient penalty)
    return loss + reg * torch.cat([d_expert, d_buffer], -1).pow(2).mean(-1)


def js_discriminator_loss(d_expert: Tensor, d_buffer: Tensor, reg: float, bound: float) -> Tensor:
    """DAC's loss (binary cross-entropy, expert = 1, buffer = 0), same shapes, clamp and regulariser."""
    de, db = d_expert.clamp(-bound, bound), d_buffer.clamp(-bound, bound)
    # L_D = −E_{D_E}[log σ(D)] − E_{B_u}[log(1 − σ(D))],   1 − σ(D) = σ(−D)
    loss = -F.logsigmoid(de).mean(-1) - F.logsigmoid(-db).mean(-1)
    return loss + reg * torch.cat([d_expert, d_buffer], -1).pow(2).mean(-1)


DISCRIMINATOR_LOSSES = {"rkl": rkl_discriminator_loss, "js": js_discriminator_loss}


def discriminator_reward(d: Tensor) -> Tensor:
    """The weak learner's reward: r(s,a) = D(s,a). For "rkl" that is the estimate of log(d^E/d^mix); for "js"
    it is DAC's log σ(D) − log(1 − σ(D)) = D. Recomputed from the current D every round, never stored."""
    return d.detach()


# --------------------------------------------------------------------------------------------- the boosting loop


@dataclass(frozen=True)
class Recipe:
    """What separates AILBoost from DAC-style imitation inside the same loop."""

    divergence: str  # "rkl" (AILBoost's L_D) or "js" (DAC's binary classifier)
    boosting: bool  # True: weighted buffer, the ensemble is the policy; False: uniform buffer, the last learner


AILBOOST = Recipe("rkl", True)
DAC = Recipe("js", False)


@dataclass
class ImitationRun:
    """One independent run: its recipe, its expert data ``expert_pairs (N_E,)`` (flat s·A + a), its own random
    streams (rollouts: numpy, minibatches: torch), and what it produced round by round (t = 1 … T)."""

    recipe: Recipe
    expert_pairs: Tensor
    rng: np.random.Generator
    generator: torch.Generator
    buffer: ReplayBuffer = field(default_factory=ReplayBuffer)
    learners: list[np.ndarray] = field(default_factory=list)  # π_t (S, A)
    weights: list[np.ndarray] = field(default_factory=list)  # slot/ensemble weights after round t, (t,)
    discriminators: list[np.ndarray] = field(default_factory=list)  # D after round t, (S, A)
    disc_losses: list[float] = field(default_factory=list)  # mean L_D over round t's K_D steps

    def policy(self, t: int):
        """The policy after round t: the ensemble (AILBoost, a per-episode Mixture) or the last learner (DAC)."""
        if not self.recipe.boosting:
            return self.learners[t - 1]
        return gw.mixture(self.learners[:t], self.weights[t - 1])


def collect_slot(mdp: gw.GridWorld, policy: np.ndarray, n_samples: int, rng: np.random.Generator) -> Tensor:
    """Whole episodes of ``policy``, in order, until at least ``n_samples`` steps (as the official code collects),
    as flat (s, a) indices ``(N ≥ n_samples,)``. Episodes are drawn 32 at a time (vectorised); the ones after
    the budget is reached are never used."""
    chunks, total = [], 0
    while total < n_samples:
        data = gw.rollouts(mdp, policy, 32, rng)
        # keep the first episodes whose steps reach the budget
        keep = int(np.searchsorted(data.episode_offsets, n_samples - total))
        end = int(data.episode_offsets[min(keep, data.n_episodes)])
        chunks.append(data.observations[:end] * mdp.n_actions + data.actions[:end])
        total += end
    return torch.from_numpy(np.concatenate(chunks))


def adversarial_imitation(
    mdp: gw.GridWorld,
    runs: list[ImitationRun],
    *,
    n_rounds: int,
    eta: float,
    n_samples: int,
    disc_steps: int,
    batch_size: int,
    lr: float,
    reg: float,
    bound: float,
    temperature: float,
    sweeps: int,
    on_disc_step: Callable[[int, Tensor, Tensor], None] | None = None,
    on_round: Callable[[int, Tensor, np.ndarray], None] | None = None,
) -> list[ImitationRun]:
    """AILBoost (``Recipe AILBOOST``) or DAC-style imitation (``DAC``) for each run, on the known gridworld.

    The R runs share nothing but the loop: their discriminator tables are one ``(R, S·A)`` tensor because the
    summed loss separates, so each run gets exactly its own gradient and Adam update (and the same numbers as
    when trained alone). ``on_disc_step(step, losses (R,), D (R, S·A))`` sees every discriminator step,
    ``on_round(t, D (R, S·A), Q (R, S, A))`` the end of every round. Returns ``runs``, filled in."""
    S, A, R, K, B = mdp.n_states, mdp.n_actions, len(runs), disc_steps, batch_size
    d = torch.zeros(R, S * A, dtype=torch.float64, requires_grad=True)  # the discriminator tables D(s, a)
    opt = torch.optim.Adam([d], lr=lr)
    is_rkl = torch.tensor([run.recipe.divergence == "rkl" for run in runs])  # (R,)
    q = np.zeros((R, S, A))
    for t in range(1, n_rounds + 1):
        batches_b, batches_e = [], []
        for i, run in enumerate(runs):
            # the weak learner: a few soft Q-iteration sweeps on r = D, warm-started from its last Q (never solved)
            solution = gw.soft_q_iteration(mdp, discriminator_reward(d[i]).view(S, A), temperature, sweeps, q0=q[i])
            q[i] = solution.q
            run.learners.append(solution.policy)
            # its own N_s fresh samples go into a new slot of the buffer
            run.buffer.add_slot(collect_slot(mdp, solution.policy, n_samples, run.rng))
            # AILBoost: w ← (1 − η)·w, append η;   DAC: w_j ∝ N_j (every stored step equally likely)
            w = (
                boosting_weights(run.buffer.weights, eta)
                if run.recipe.boosting
                else slot_size_weights(run.buffer.sizes)
            )
            run.buffer.weights = w
            # the round's K_D minibatches: B pairs from the buffer, B from the expert data              (K, B) each
            batches_b.append(run.buffer.sample(K * B, run.generator).view(K, B))
            pick = torch.randint(len(run.expert_pairs), (K * B,), generator=run.generator)
            batches_e.append(run.expert_pairs[pick].view(K, B))
        ib, ie = torch.stack(batches_b, 1), torch.stack(batches_e, 1)  # (K, R, B)
        round_losses = []
        for k in range(K):
            # D at the sampled pairs                                                                    (R, B)
            db, de = d.gather(1, ib[k]), d.gather(1, ie[k])
            # L_D per run: the rkl form (AILBoost) or the binary cross-entropy (DAC)                    (R,)
            losses = torch.where(
                is_rkl,
                rkl_discriminator_loss(de, db, reg, bound),
                js_discriminator_loss(de, db, reg, bound),
            )
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            round_losses.append(losses.detach())
            if on_disc_step is not None:
                on_disc_step((t - 1) * K + k + 1, round_losses[-1], d.detach())
        mean_loss = torch.stack(round_losses).mean(0) if round_losses else torch.full((R,), float("nan"))
        for i, run in enumerate(runs):
            run.weights.append(run.buffer.weights.numpy().copy())
            run.discriminators.append(d.detach()[i].view(S, A).numpy().copy())
            run.disc_losses.append(float(mean_loss[i]))
        if on_round is not None:
            on_round(t, d.detach(), q)
    return runs

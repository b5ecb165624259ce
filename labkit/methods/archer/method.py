"""ArCHer — arXiv 2402.19446 (Zhou, Zanette, Pan, Levine, Kumar; ICML 2024): hierarchical multi-turn RL for LM agents.

A dialogue is an utterance-level MDP: state s_t = the history so far, action a_t = one utterance of tokens
a_t^1 … a_t^L, reward r_t, done d_t. ArCHer runs two learners at once:

- a high-level **off-policy critic** on utterances, trained from a replay buffer D with TD targets. Two Q-heads
  Q_φk(s, a) and two V-heads V_ψk(s) (k = 1, 2), with Polyak-averaged target copies Q̄, V̄:

      L_Q = E_D[(Q_φk(s, a) − (r + γ(1 − d)·V̄_ψk(s')))²]
      L_V = E_{s∼D, a'∼π_θ(·|s)}[(V_ψk(s) − Q̄_φk(s, a'))²]        (a' fresh from the CURRENT policy)
      target ← (1 − τ)·target + τ·online                           (after every critic step)

- a low-level **token-level policy gradient** whose per-utterance advantage comes from the critic:

      A(s, a) = min_k Q_φk(s, a) − min_k V_ψk(s)                   (no gradient)
      L_π = −E_{s∼D, a∼π_θ(·|s)}[A(s, a) · Σ_l log π_θ(a^l | s, a^{<l})]

The first ``warmup`` iterations update only the critic (an actor driven by a random critic forgets its warm start).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from labkit.substrates.dialogue import GuessMyNumber, Transitions, rollout, sample_utterances, utterance_logprobs

# --- the critic --------------------------------------------------------------------------------------------


def mlp(d_in: int, d_hidden: int) -> nn.Sequential:
    """A 2-layer MLP head with one output."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, 1))


class UtteranceCritic(nn.Module):
    """Its own GRU encoder of the history; Q-heads on [enc(s), emb(op), emb(n)], V-heads on enc(s).

    ``q(s, a)`` and ``v(s)`` return the two heads side by side, ``(B, 2)``; states are ``(B, S)`` token ids
    (left-padded, so the last position summarises the whole history), utterances ``(B, 2)``.
    """

    def __init__(self, vocab_size: int, d_embed: int = 32, d_hidden: int = 64):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_embed)
        self.gru = nn.GRU(d_embed, d_hidden, batch_first=True)
        self.q_heads = nn.ModuleList(mlp(d_hidden + 2 * d_embed, d_hidden) for _ in range(2))
        self.v_heads = nn.ModuleList(mlp(d_hidden, d_hidden) for _ in range(2))

    def encode(self, states: Tensor) -> Tensor:
        return self.gru(self.tok(states))[0][:, -1]  # (B, d_hidden)

    def q(self, states: Tensor, actions: Tensor, enc: Tensor | None = None) -> Tensor:
        """Both Q-heads ``(B, 2)``; pass ``enc = encode(states)`` to reuse an encoding."""
        enc = self.encode(states) if enc is None else enc
        x = torch.cat([enc, self.tok(actions).flatten(1)], dim=-1)
        return torch.cat([h(x) for h in self.q_heads], dim=-1)

    def v(self, states: Tensor, enc: Tensor | None = None) -> Tensor:
        """Both V-heads ``(B, 2)``."""
        enc = self.encode(states) if enc is None else enc
        return torch.cat([head(enc) for head in self.v_heads], dim=-1)


# --- the losses and update rules ---------------------------------------------------------------------------


def q_loss(q: Tensor, rewards: Tensor, dones: Tensor, v_next_target: Tensor, gamma: float) -> Tensor:
    """TD loss of both Q-heads. ``q, v_next_target (B, 2)``; ``rewards, dones (B,)``. Head k bootstraps from V̄_ψk."""
    # y_k = r + γ·(1 − d)·V̄_ψk(s')
    target = rewards[:, None] + gamma * (1.0 - dones[:, None]) * v_next_target
    # L_Q = E[(Q_φk(s, a) − y_k)²], summed over k
    return (q - target.detach()).pow(2).mean(0).sum()


def v_loss(v: Tensor, q_target_pi: Tensor) -> Tensor:
    """Regress both V-heads onto the target Q at a fresh policy utterance a' ∼ π_θ(·|s). ``(B, 2)`` each."""
    # L_V = E[(V_ψk(s) − Q̄_φk(s, a'))²], summed over k
    return (v - q_target_pi.detach()).pow(2).mean(0).sum()


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Polyak averaging of every parameter."""
    for t, o in zip(target.parameters(), online.parameters()):
        # θ̄ ← (1 − τ)·θ̄ + τ·θ
        t.mul_(1.0 - tau).add_(o, alpha=tau)


def advantage(q: Tensor, v: Tensor) -> Tensor:
    """Utterance-level advantage from the pessimistic heads. ``q, v (B, 2) → (B,)``, no gradient."""
    # A(s, a) = min_k Q_φk(s, a) − min_k V_ψk(s)
    return (q.min(-1).values - v.min(-1).values).detach()


def actor_loss(adv: Tensor, logp_utterance: Tensor) -> Tensor:
    """Token-level REINFORCE with the utterance advantage. ``adv, logp_utterance (B,)``; logp is Σ_l over tokens."""
    # L_π = −E[A(s, a) · Σ_l log π_θ(a^l | s, a^{<l})]
    return -(adv.detach() * logp_utterance).mean()


# --- the replay buffer --------------------------------------------------------------------------------------


class ReplayBuffer:
    """The latest ``capacity`` utterance-level transitions (s, a, r, s', d); older rows drop out first."""

    def __init__(self, capacity: int):
        self.capacity, self.rows = capacity, None

    def __len__(self) -> int:
        return 0 if self.rows is None else len(self.rows[2])

    def add(self, t: Transitions) -> None:
        new = [t.states, t.actions, t.rewards, t.next_states, t.dones]
        rows = new if self.rows is None else [torch.cat([old, n]) for old, n in zip(self.rows, new)]
        self.rows = [x[-self.capacity :] for x in rows]

    def sample(self, batch: int, generator=None) -> Transitions:
        idx = torch.randint(0, len(self), (batch,), generator=generator)
        return Transitions(*(x[idx] for x in self.rows), episode=idx)


# --- one iteration and the training loop --------------------------------------------------------------------


@dataclass(frozen=True)
class ArcherConfig:
    """The knobs of the loop."""

    iterations: int
    critic_steps: int = 10
    actor_steps: int = 3
    warmup: int = 5
    batch: int = 32
    gamma: float = 0.95
    tau: float = 0.1
    critic_lr: float = 1e-3
    actor_lr: float = 3e-4
    capacity: int = 3000
    grad_clip: float = 1.0


def critic_step(critic, target, opt, batch: Transitions, policy, gamma: float, tau: float, grad_clip: float, gen):
    """One TD step of the Q- and V-heads on a minibatch, then the Polyak update. Returns (L_Q, L_V)."""
    with torch.no_grad():
        a_pi = sample_utterances(policy, batch.states, gen)  # a' ∼ π_θ(·|s), the current policy
        enc_next, enc_now = target.encode(torch.cat([batch.next_states, batch.states])).chunk(2)  # one GRU pass
        v_next = target.v(batch.next_states, enc_next)  # V̄(s') (B, 2)
        q_pi = target.q(batch.states, a_pi, enc_now)  # Q̄(s, a') (B, 2)
    enc = critic.encode(batch.states)
    lq = q_loss(critic.q(batch.states, batch.actions, enc), batch.rewards, batch.dones, v_next, gamma)
    lv = v_loss(critic.v(batch.states, enc), q_pi)
    opt.zero_grad()
    (lq + lv).backward()
    nn.utils.clip_grad_norm_(critic.parameters(), grad_clip)
    opt.step()
    soft_update(target, critic, tau)
    return lq, lv


def actor_step(policy, critic, opt, states: Tensor, grad_clip: float, gen) -> Tensor:
    """One policy-gradient step: fresh utterances a ∼ π_θ(·|s) on buffer states, scored by the critic."""
    with torch.no_grad():
        a = sample_utterances(policy, states, gen)
        enc = critic.encode(states)
        adv = advantage(critic.q(states, a, enc), critic.v(states, enc))
    loss = actor_loss(adv, utterance_logprobs(policy, states, a))
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
    opt.step()
    return loss


#: called once per iteration: monitor(iteration, episodes so far, {name: loss}, {name: module}, rollout)
Monitor = Callable[[int, int, dict, dict, object], None]


def train_archer(
    policy: nn.Module, env: GuessMyNumber, cfg: ArcherConfig, *, seed: int, monitor: Monitor | None = None
) -> UtteranceCritic:
    """ArCHer: each iteration rolls out one game per parallel env into the replay buffer, takes ``critic_steps``
    TD steps of the utterance-level critic and, after ``warmup`` iterations, ``actor_steps`` token-level
    policy-gradient steps on the critic's advantage. Returns the trained critic."""
    gen = torch.Generator().manual_seed(seed)
    critic = UtteranceCritic(env.vocab_size)
    target = copy.deepcopy(critic)
    for p in target.parameters():
        p.requires_grad_(False)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr)
    actor_opt = torch.optim.Adam(policy.parameters(), lr=cfg.actor_lr)
    buffer = ReplayBuffer(cfg.capacity)
    for it in range(cfg.iterations):
        played = rollout(policy, env, seed=seed * 100_003 + it, generator=gen)
        buffer.add(played.transitions)
        losses = {}
        for _ in range(cfg.critic_steps):
            lq, lv = critic_step(
                critic, target, critic_opt, buffer.sample(cfg.batch, gen), policy, cfg.gamma, cfg.tau,
                cfg.grad_clip, gen,
            )  # fmt: skip
            losses.update(q=lq, v=lv)
        if it >= cfg.warmup:
            for _ in range(cfg.actor_steps):
                losses["actor"] = actor_step(
                    policy, critic, actor_opt, buffer.sample(cfg.batch, gen).states, cfg.grad_clip, gen
                )
        if monitor is not None:
            monitor(it, (it + 1) * env.n_envs, losses, {"policy": policy, "critic": critic}, played)
    return critic

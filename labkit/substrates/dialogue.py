"""Multi-turn dialogue toys for language-agent RL: "guess my number", vectorised over parallel games.

The environment thinks of a secret k ∈ {1 … N}. Each turn the agent speaks a two-token utterance (op, n) with
op ∈ {"<", "="} and n ∈ {1 … N}; the environment answers "yes" or "no" (is k < n? is k = n?). A correct "= k"
ends the game. Reward −1 per turn, 0 on the winning turn; at most ``max_turns`` turns (then the game is truncated).
A malformed utterance (a number where the op belongs, or the reverse) is a wasted turn answered "no".

Tokens: PAD, BOS, "<", "=", "yes", "no", then the numbers 1 … N. The observation is the history
[BOS, op_1, n_1, ans_1, …] LEFT-padded with PAD to the fixed length ``1 + 3·max_turns`` so that a state and an
utterance concatenate into one causal sequence [s; op; n] of fixed shape.

API (gymnasium style, vectorised, no auto-reset): ``obs, info = env.reset(seed=…)``;
``obs, reward, terminated, truncated, info = env.step(actions)`` with ``actions (B, 2)`` token ids; a finished
game ignores further actions (reward 0, stays done; ``info["active"]`` marks the games that were still running).

Also here: sampling utterances from a token-level LM policy, their summed log-probs, rollouts into transitions,
evaluation (sampled or greedy), the behaviour-cloning warm start on random well-formed dialogues, binary search and the
optimal expected return by dynamic programming.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from labkit.models.tiny_lm import token_logprobs

PAD, BOS, LT, EQ, YES, NO = range(6)
FIRST_NUMBER = 6
WORDS = {PAD: "", BOS: "", LT: "<", EQ: "=", YES: "yes", NO: "no"}


def vocab_size(n_secrets: int) -> int:
    """PAD, BOS, "<", "=", "yes", "no" and the N numbers."""
    return FIRST_NUMBER + n_secrets


def number_token(n):
    """Token id of the number n (1-based); works on ints and tensors."""
    return n + FIRST_NUMBER - 1


class GuessMyNumber:
    """``n_envs`` games of "guess my number" played in lock step (see the module docstring)."""

    def __init__(self, n_envs: int, n_secrets: int = 16, max_turns: int = 8, device="cpu"):
        if n_secrets < 2 or max_turns < 1 or n_envs < 1:
            raise ValueError("need n_secrets ≥ 2, max_turns ≥ 1, n_envs ≥ 1")
        self.n_envs, self.n_secrets, self.max_turns, self.device = n_envs, n_secrets, max_turns, device
        self.state_len = 1 + 3 * max_turns
        self.vocab_size = vocab_size(n_secrets)

    def reset(self, seed: int | None = None, secrets: torch.Tensor | None = None):
        """New secrets (uniform on 1 … N from ``seed``, or given ``(B,)``); returns (obs ``(B, S)``, info)."""
        if secrets is None:
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            secrets = torch.randint(1, self.n_secrets + 1, (self.n_envs,), generator=gen)
        self.secret = secrets.to(self.device).long()
        self.history = torch.full((self.n_envs, 0), PAD, dtype=torch.long, device=self.device)
        self.turn = 0
        self.done = torch.zeros(self.n_envs, dtype=torch.bool, device=self.device)
        self.won = torch.zeros_like(self.done)
        return self.observation(), {"secret": self.secret}

    def observation(self) -> torch.Tensor:
        """[PAD … PAD, BOS, history] ``(B, 1 + 3·max_turns)``."""
        body = torch.cat([torch.full((self.n_envs, 1), BOS, device=self.device), self.history], dim=1)
        pad = torch.full((self.n_envs, self.state_len - body.shape[1]), PAD, device=self.device)
        return torch.cat([pad, body], dim=1).long()

    def answer(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(yes ``(B,)`` bool, win ``(B,)`` bool) for utterances ``(B, 2)``; malformed ones get "no"."""
        op, tok = actions[:, 0], actions[:, 1]
        n = tok - FIRST_NUMBER + 1
        well_formed = (tok >= FIRST_NUMBER) & (tok < self.vocab_size)
        less = well_formed & (op == LT) & (self.secret < n)
        win = well_formed & (op == EQ) & (self.secret == n)
        return less | win, win

    def step(self, actions: torch.Tensor):
        actions = actions.to(self.device).long()
        active = ~self.done
        yes, win = self.answer(actions)
        win = win & active
        reward = torch.where(win, 0.0, -1.0) * active
        self.turn += 1
        ans = torch.where(yes, YES, NO)
        utterance = torch.stack([actions[:, 0], actions[:, 1], ans], dim=1)
        self.history = torch.cat([self.history, torch.where(active[:, None], utterance, PAD)], dim=1)
        self.won |= win
        terminated = win
        truncated = active & ~win & (self.turn >= self.max_turns)
        self.done |= terminated | truncated
        return self.observation(), reward, terminated, truncated, {"active": active, "won": self.won.clone()}


# --- a token-level LM policy speaking utterances ----------------------------------------------------------


def sample_utterances(policy: nn.Module, states: torch.Tensor, generator=None, greedy: bool = False):
    """Two tokens (op, n) from π(·|s) autoregressively (temperature 1, or argmax). ``(B, S) → (B, 2)``.

    A GRU policy (``tok``, ``gru``, ``head``, as :class:`~labkit.models.tiny_lm.TinyGRULM`) reads the history once
    and carries its hidden state to the second token; any other causal LM re-reads [s; op]."""

    def pick(logits):
        if greedy:
            return logits.argmax(-1)
        return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)

    if isinstance(getattr(policy, "gru", None), nn.GRU):
        out, h = policy.gru(policy.tok(states))
        op = pick(policy.head(out[:, -1]))
        out, _ = policy.gru(policy.tok(op[:, None]), h)
        return torch.stack([op, pick(policy.head(out[:, -1]))], dim=1)
    seq = states
    for _ in range(2):
        seq = torch.cat([seq, pick(policy(seq)[:, -1])[:, None]], dim=1)
    return seq[:, -2:]


def utterance_logprobs(policy: nn.Module, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log π(a|s) = Σ_l log π(a^l | s, a^{<l}), summed over the two tokens. ``(B,)``."""
    return token_logprobs(policy, states, actions).sum(-1)


@dataclass
class Transitions:
    """Utterance-level transitions (s, a, r, s', d): ``(M, S)``, ``(M, 2)``, ``(M,)``, ``(M, S)``, ``(M,)``;
    ``episode (M,)`` indexes the game each came from (0 … B−1 in one rollout)."""

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_states: torch.Tensor
    dones: torch.Tensor
    episode: torch.Tensor


@dataclass
class Rollout:
    transitions: Transitions
    returns: torch.Tensor  # (B,) undiscounted episode returns
    won: torch.Tensor  # (B,) bool


@torch.no_grad()
def rollout(policy: nn.Module, env: GuessMyNumber, seed: int, generator=None, greedy: bool = False) -> Rollout:
    """Play one game in each of the env's ``B`` slots with the policy; keep the steps of running games."""
    obs, _ = env.reset(seed=seed)
    parts, returns = [], torch.zeros(env.n_envs, device=env.device)
    for _ in range(env.max_turns):
        actions = sample_utterances(policy, obs, generator, greedy)
        nxt, reward, term, trunc, info = env.step(actions)
        a = info["active"]
        # d = 1 on a win and at the turn limit: the history shows the turn count, so the limit is part of the MDP
        # and the last state has no future (bootstrapping there would read V at a state the critic never trains on)
        done = (term | trunc)[a].float()
        parts.append((obs[a], actions[a], reward[a], nxt[a], done, torch.nonzero(a).squeeze(-1)))
        returns += reward
        obs = nxt
        if bool(env.done.all()):
            break
    cat = [torch.cat(x) for x in zip(*parts)]
    return Rollout(Transitions(*cat), returns, env.won.clone())


@torch.no_grad()
def evaluate(policy: nn.Module, n_secrets: int, max_turns: int, n_games: int, seed: int, greedy: bool = False):
    """Play ``n_games`` fresh secrets (drawn from ``seed``; utterances sampled at temperature 1 from the same seed,
    or argmax with ``greedy``): (mean return, success rate)."""
    env = GuessMyNumber(n_games, n_secrets, max_turns)
    out = rollout(policy, env, seed=seed, generator=torch.Generator().manual_seed(seed), greedy=greedy)
    return float(out.returns.mean()), float(out.won.float().mean())


def random_dialogues(
    n: int, n_secrets: int, max_turns: int, generator, consistent: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random dialogues for behaviour cloning, as states ``(n·T, S)`` and utterances ``(n·T, 2)``: each turn a
    fair coin picks the op and n is uniform on the secrets still consistent with the answers so far ("< n" with
    lo < n ≤ hi, "= n" with lo ≤ n ≤ hi), or on all of 1 … N when ``consistent=False``. A game that is won
    early simply stops; the environment's answers are true."""
    env = GuessMyNumber(n, n_secrets, max_turns)
    obs, _ = env.reset(secrets=torch.randint(1, n_secrets + 1, (n,), generator=generator))
    states, actions = [], []
    for _ in range(max_turns):
        lo, hi = (
            feasible_interval(obs, n_secrets) if consistent else (torch.ones(n).long(), torch.full((n,), n_secrets))
        )
        ask = (torch.rand(n, generator=generator) < 0.5) & (hi > lo)
        u = torch.rand(n, generator=generator)
        guess = lo + (u * (hi - lo + 1)).long().clamp(max=hi - lo)
        split = lo + 1 + (u * (hi - lo)).long().clamp(max=(hi - lo - 1).clamp(min=0))
        a = torch.stack([torch.where(ask, LT, EQ), number_token(torch.where(ask, split, guess))], 1)
        keep = ~env.done
        states.append(obs[keep])
        actions.append(a[keep])
        obs, *_ = env.step(a)
        if bool(env.done.all()):
            break
    return torch.cat(states), torch.cat(actions)


def behaviour_clone(policy: nn.Module, states, actions, n_steps: int, lr: float, batch: int, generator) -> float:
    """``n_steps`` of Adam on −log π(a|s) over random minibatches; returns the last loss."""
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    loss = torch.tensor(0.0)
    for _ in range(n_steps):
        idx = torch.randint(0, len(states), (batch,), generator=generator)
        loss = -utterance_logprobs(policy, states[idx], actions[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


# --- binary search and the optimum ------------------------------------------------------------------------


def feasible_interval(states: torch.Tensor, n_secrets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The secrets [lo, hi] consistent with the answers in the histories ``(B, S)`` (a "= n" miss is ignored)."""
    lo = torch.ones(len(states), dtype=torch.long)
    hi = torch.full((len(states),), n_secrets, dtype=torch.long)
    for t in range(1, states.shape[1], 3):
        op, tok, ans = states[:, t], states[:, t + 1], states[:, t + 2]
        n = tok - FIRST_NUMBER + 1
        asked = op == LT
        hi = torch.where(asked & (ans == YES), torch.minimum(hi, n - 1), hi)
        lo = torch.where(asked & (ans == NO), torch.maximum(lo, n), lo)
    return lo, hi


def binary_search(states: torch.Tensor, n_secrets: int) -> torch.Tensor:
    """Halve the feasible interval with "< mid" until two candidates are left, then guess "= lo"
    (and "= hi" after a miss, which the history shows as the last turn). ``(B, S) → (B, 2)``."""
    lo, hi = feasible_interval(states, n_secrets)
    missed = (states[:, -3] == EQ) & (states[:, -1] == NO)
    lo = torch.where(missed, lo + 1, lo)
    size = hi - lo + 1
    mid = lo + (size + 1) // 2  # "< mid": yes leaves ⌊size/2⌋ candidates
    op = torch.where(size <= 2, EQ, LT)
    n = torch.where(size <= 2, lo, mid)
    return torch.stack([op, number_token(n)], dim=1)


@cache
def expected_turns(m: int) -> float:
    """Fewest expected turns to win with m equally likely candidates (no turn limit), by dynamic programming:
    f(1) = 1, f(m) = 1 + min( min_j [j·f(j) + (m−j)·f(m−j)]/m  ("< n" splits j | m−j),  (m−1)/m·f(m−1)  ("=") )."""
    if m == 1:
        return 1.0
    split = min((j * expected_turns(j) + (m - j) * expected_turns(m - j)) / m for j in range(1, m))
    return 1.0 + min(split, (m - 1) / m * expected_turns(m - 1))


def optimal_return(n_secrets: int) -> float:
    """Best expected return: −(turns − 1), since only the winning turn is free."""
    return 1.0 - expected_turns(n_secrets)


def render(states: torch.Tensor, actions: torch.Tensor | None = None) -> list[str]:
    """One readable line per turn of a single history ``(S,)`` (and a final utterance ``(2,)``)."""
    toks = [int(t) for t in states if int(t) not in (PAD, BOS)]
    if actions is not None:
        toks += [int(t) for t in actions]

    def word(t):
        return WORDS.get(t, str(t - FIRST_NUMBER + 1))

    return [" ".join(word(t) for t in toks[i : i + 3]) for i in range(0, len(toks), 3)]

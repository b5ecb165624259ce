"""LaMo — "Unleashing the Power of Pre-trained Language Models for Offline Reinforcement Learning"
(Shi, Liu, Wang, Zhang, Lin, Zhou, Zhang, Chen; ICLR 2024), arXiv 2310.20587.

A Decision Transformer (DT) reads a trajectory as tokens τ = (R̂_1, s_1, a_1, R̂_2, s_2, a_2, …) with the
return-to-go R̂_t = Σ_{t' ≥ t} r_{t'} (scaled), K timesteps = 3K tokens, and predicts a_t from the hidden state of
the s_t token. LaMo changes four things:

1. the transformer blocks come from a PRE-TRAINED language model (GPT-2 in the paper);
2. every LM weight is frozen and only LoRA on the attention's merged Q/K/V projection trains:
       W' = W + (α/r)·B A,    A (r, d), B (3d, r) = 0 at the start
3. the linear input/output projections become MLPs ("MLP embedding", the official ``ResidualBlock``/``MLPBlock``):
       e(x) = W_2 GELU(W_1 x) + W_1 x        for x ∈ {R̂ (1), s (state_dim), a (act_dim)}
       â_t  = W_4 GELU(W_3 h_{s_t})
4. the LM's own next-token loss on text is kept as an auxiliary loss, through the same frozen weights + LoRA:
       L = L_act + λ·L_LM,   λ = 0.1 ("co_lambda")

Tokens: x = LN([e_R(R̂_t), e_s(s_t), e_a(a_t)]_t) + e_time(t) + e_pos(i), i = 0 … 3K−1 (the LN before the time
embedding, as the official code). GPT-2's learned positions (``wpe``) stay in the official model; the kit's tiny LM
knows only 12 positions, so :class:`DecisionTransformer` gets a position table of 3K rows whose first 12 rows are the
LM's pretrained ones and the rest fresh N(0, 0.02²), trainable (a name with "embed": the official rule "train every
parameter whose name contains embed or predict").

Discrete actions (the gridworld; the paper's Atari setting): a is one-hot, the head gives logits, and
       L_act = −(1/|valid|) Σ_{b,t valid} log softmax(â_{b,t})[a_{b,t}]            (padding never counts)

The kit's "pre-trained LM" is :mod:`labkit.substrates.pretrained_lm` (a 2-layer TinyLM pretrained on arithmetic
strings "a+b=c;") instead of GPT-2 on WikiText; its text for L_LM is the same arithmetic corpus, scored as in its
pretraining (the answer tokens given the prompt). :func:`train_dt` is the training loop, :func:`rollout` the
return-conditioned evaluation (R̂ ← R̂ − r after every step).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labkit.models.adapters import inject_lora
from labkit.models.tiny_lm import nll_loss

TOKENS_PER_STEP = 3  # (R̂_t, s_t, a_t)
RETURN_SLOT, STATE_SLOT, ACTION_SLOT = 0, 1, 2
#: TinyLM fuses q, k, v in one ``qkv`` linear, as GPT-2's ``c_attn`` (the official MergedLinear target)
LORA_TARGETS = r"blocks\.\d+\.attn\.qkv"


# --------------------------------------------------------------------------------------------- the model


class ResidualMLP(nn.Module):
    """LaMo's MLP embedding: e(x) = W_2 GELU(W_1 x) + W_1 x, ``(..., d_in) → (..., d)``."""

    def __init__(self, d_in: int, d: int):
        super().__init__()
        self.w1, self.w2 = nn.Linear(d_in, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.w1(x)
        # e = W_2 GELU(W_1 x) + W_1 x
        return self.w2(F.gelu(h)) + h


class MLPHead(nn.Module):
    """LaMo's action head: â = W_4 GELU(W_3 h), ``(..., d) → (..., n_out)``."""

    def __init__(self, d: int, n_out: int):
        super().__init__()
        self.w3, self.w4 = nn.Linear(d, d), nn.Linear(d, n_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # â = W_4 GELU(W_3 h)
        return self.w4(F.gelu(self.w3(h)))


def run_blocks(lm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The LM's causal transformer blocks and final LayerNorm on given embeddings ``(B, L, d)`` → ``(B, L, d)``
    (its token and position embeddings are bypassed: the DT feeds ``inputs_embeds``, as the official code)."""
    for block in lm.blocks:
        x = block(x)
    return lm.ln_f(x)


def lamo_backbone(lm: nn.Module, r: int, alpha: float, dropout: float) -> nn.Module:
    """A deep copy of the pretrained LM with every weight frozen and LoRA (rank r, scale α/r) on each ``qkv``."""
    lm = copy.deepcopy(lm)
    inject_lora(lm, LORA_TARGETS, r=r, alpha=alpha, dropout=dropout)
    return lm


class DecisionTransformer(nn.Module):
    """A DT on the blocks of ``lm`` (used as given: LoRA-adapted for LaMo, a fresh trainable TinyLM for the DT
    baseline). ``mlp=True``: LaMo's MLP embeddings and head; ``False``: DT's linear ones. Discrete actions."""

    def __init__(self, lm: nn.Module, state_dim: int, n_actions: int, context: int, max_timestep: int, mlp=True):
        super().__init__()
        d = lm.d_model
        self.lm, self.n_actions, self.context = lm, n_actions, context
        proj = ResidualMLP if mlp else nn.Linear
        self.embed_return, self.embed_state, self.embed_action = proj(1, d), proj(state_dim, d), proj(n_actions, d)
        self.embed_timestep = nn.Embedding(max_timestep + 1, d)
        self.embed_position = nn.Embedding(TOKENS_PER_STEP * context, d)
        for table in (self.embed_timestep, self.embed_position):
            nn.init.normal_(table.weight, std=0.02)  # GPT-2's init for position tables
        with torch.no_grad():  # the LM's own learned positions for the first rows it knows
            n = min(lm.pos.weight.shape[0], self.embed_position.weight.shape[0])
            self.embed_position.weight[:n] = lm.pos.weight[:n]
        self.embed_ln = nn.LayerNorm(d)
        self.predict_action = MLPHead(d, n_actions) if mlp else nn.Linear(d, n_actions)

    def tokens(self, returns, states, actions, timesteps) -> torch.Tensor:
        """x ``(B, 3T, d)`` from R̂ ``(B, T)``, s ``(B, T, state_dim)``, a ``(B, T)`` (indices) and t ``(B, T)``."""
        B, T = returns.shape
        r = self.embed_return(returns.unsqueeze(-1))
        s = self.embed_state(states)
        a = self.embed_action(F.one_hot(actions, self.n_actions).to(r.dtype))
        # interleave (R̂_1, s_1, a_1, R̂_2, …): token 3t + slot                                     (B, 3T, d)
        x = self.embed_ln(torch.stack([r, s, a], dim=2).reshape(B, TOKENS_PER_STEP * T, -1))
        # + e_time(t) on all three tokens of step t, + e_pos(i) on token i
        time = self.embed_timestep(timesteps).repeat_interleave(TOKENS_PER_STEP, dim=1)
        return x + time + self.embed_position(torch.arange(TOKENS_PER_STEP * T, device=x.device))

    def forward(self, returns, states, actions, timesteps) -> torch.Tensor:
        """Action logits ``(B, T, n_actions)``, read at each s_t token: causal attention lets â_t see R̂_≤t, s_≤t and
        a_<t, never a_t itself."""
        h = run_blocks(self.lm, self.tokens(returns, states, actions, timesteps))
        return self.predict_action(h.view(h.shape[0], -1, TOKENS_PER_STEP, h.shape[-1])[:, :, STATE_SLOT])


# --------------------------------------------------------------------------------------------- the losses


def action_loss(logits: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DT's action loss for discrete actions: logits ``(B, T, A)``, actions ``(B, T)``, mask ``(B, T)`` (False on
    padding)."""
    nll = F.cross_entropy(logits.flatten(0, 1), actions.flatten(), reduction="none")  # (B·T,)
    m = mask.flatten().to(nll.dtype)
    # L_act = −(1/|valid|) Σ_{valid (b,t)} log softmax(â_{b,t})[a_{b,t}]
    return (nll * m).sum() / m.sum().clamp_min(1.0)


def language_loss(lm: nn.Module, prompts, answers, mask) -> torch.Tensor:
    """The auxiliary LM loss on a text batch (prompts ``(B, P)``, answers ``(B, L)``, mask ``(B, L)``), through the
    LM's own embeddings, the same frozen blocks + LoRA, and its own head."""
    # L_LM = −(1/B) Σ_b (1/|y_b|) Σ_t log p(y_{b,t} | x_b, y_{b,<t})
    return nll_loss(lm, prompts, answers, mask)


def lamo_loss(act: torch.Tensor, lm: torch.Tensor, lam: float) -> torch.Tensor:
    """The objective: L = L_act + λ·L_LM (λ = 0 drops the language loss)."""
    # L = L_act + λ·L_LM
    return act + lam * lm


# --------------------------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class Trajectories:
    """Episodes as padded tensors: R̂ ``(E, H)``, s ``(E, H, state_dim)``, a ``(E, H)``, lengths ``(E,)``; H is
    the longest episode plus K, so every window fits, and steps past an episode's end are padding."""

    returns: torch.Tensor
    states: torch.Tensor
    actions: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def from_episodes(cls, returns, states, actions, lengths, context: int) -> Trajectories:
        """From flat per-step arrays (episode after episode) and the episode lengths."""
        lengths = np.asarray(lengths, dtype=np.int64)
        E, H = len(lengths), int(lengths.max()) + context
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        R = np.zeros((E, H), np.float32)
        S = np.zeros((E, H, np.asarray(states).shape[-1]), np.float32)
        A = np.zeros((E, H), np.int64)
        for e, (lo, n) in enumerate(zip(starts, lengths)):
            R[e, :n], S[e, :n], A[e, :n] = returns[lo : lo + n], states[lo : lo + n], actions[lo : lo + n]
        return cls(torch.from_numpy(R), torch.from_numpy(S), torch.from_numpy(A), torch.from_numpy(lengths))

    def sample(self, batch_size: int, context: int, generator: torch.Generator):
        """``batch_size`` windows of K = ``context`` steps, each starting at a step drawn uniformly from all steps of
        all episodes (DT samples episodes ∝ length). Windows that run past the episode's end are padded at the END
        (mask False): causal attention keeps padding out of every real token's view. Returns R̂, s, a, t, mask."""
        step = torch.randint(int(self.lengths.sum()), (batch_size,), generator=generator)
        ends = self.lengths.cumsum(0)
        episode = torch.searchsorted(ends, step, right=True)
        start = step - (ends[episode] - self.lengths[episode])
        t = start.unsqueeze(1) + torch.arange(context)  # (B, K)
        e = episode.unsqueeze(1)
        mask = t < self.lengths[episode].unsqueeze(1)
        # padding gets timestep 0 (it is never seen by a real token)
        return self.returns[e, t], self.states[e, t], self.actions[e, t], t * mask, mask


# --------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class StepLosses:
    """One training step's losses: L_act, L_LM (NaN when λ = 0 and it is not computed), and L."""

    action: float
    language: float
    total: float


def train_dt(
    model: DecisionTransformer,
    data: Trajectories,
    text,
    *,
    steps: int,
    batch_size: int,
    text_batch: int,
    lam: float,
    lr: float,
    lm_lr: float,
    weight_decay: float,
    warmup: int,
    clip: float,
    generator: torch.Generator,
    text_generator: torch.Generator,
    on_step: Callable[[int, dict], None] | None = None,
) -> list[StepLosses]:
    """Offline training of a (LaMo) DT: AdamW on the trainable parameters only — ``lm_lr`` for those inside the LM
    (LoRA for LaMo, every block for a DT from scratch), ``lr`` for the embeddings and the head — linear warm-up,
    gradient-norm clipping. Each step: a batch of K-step windows from ``data`` and, when λ > 0, a batch of
    ``text`` (an arithmetic :class:`~labkit.data.arithmetic.Task`) drawn from its own stream.
    ``on_step(step, {"action": L_act, "language": L_LM or None, "total": L})`` sees the loss tensors."""
    inner = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("lm.")]
    outer = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("lm.")]
    groups = [{"params": g, "base_lr": rate} for g, rate in ((inner, lm_lr), (outer, lr)) if g]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    params = inner + outer
    model.train()
    history = []
    for step in range(1, steps + 1):
        returns, states, actions, t, mask = data.sample(batch_size, model.context, generator)
        act = action_loss(model(returns, states, actions, t), actions, mask)
        lm = None
        if lam > 0:
            idx = torch.randint(len(text), (text_batch,), generator=text_generator)
            lm = language_loss(model.lm, text.prompts[idx], text.answers[idx], text.mask[idx])
        loss = act if lm is None else lamo_loss(act, lm, lam)
        if on_step is not None:
            on_step(step, {"action": act, "language": lm, "total": loss})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, clip)
        for group in opt.param_groups:
            # linear warm-up: lr_s = lr · min(s / warmup, 1)
            group["lr"] = group["base_lr"] * min(step / max(warmup, 1), 1.0)
        opt.step()
        history.append(StepLosses(act.item(), float("nan") if lm is None else lm.item(), loss.item()))
    model.eval()
    return history


# --------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Rollouts:
    """``n`` episodes played in parallel: the undiscounted returns ``(n,)`` and the visited states ``(n, H + 1)``
    (the state stays put after the episode ended) with each episode's length ``(n,)``."""

    returns: np.ndarray
    states: np.ndarray
    lengths: np.ndarray


@torch.no_grad()
def rollout(
    model: DecisionTransformer,
    start_states: np.ndarray,
    step_fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
    features: Callable[[np.ndarray], np.ndarray],
    *,
    target_return: float,
    horizon: int,
    generator: torch.Generator | None = None,
) -> Rollouts:
    """The return-conditioned rollout: condition on R̂_1 = ``target_return``, draw a_t ~ softmax(â_t) (as DT and LaMo
    on Atari; greedy argmax when ``generator`` is None), then R̂_{t+1} = R̂_t − r_t; the context is the last K steps.
    ``step_fn(states, actions) → (next_states, rewards,
    terminal)`` plays one step of every episode; ``features`` maps states to the DT's state input."""
    model.eval()
    n, K = len(start_states), model.context
    state = np.asarray(start_states).copy()
    alive = np.ones(n, dtype=bool)
    total, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
    rtg = torch.full((n,), float(target_return))
    R, S, A, visited = [], [], [], [state.copy()]
    for t in range(horizon):
        R.append(rtg.clone())
        S.append(torch.as_tensor(features(state)))
        A.append(torch.zeros(n, dtype=torch.long))  # a_t's slot: after the s_t token, so never read for â_t
        lo = max(0, t + 1 - K)
        times = torch.arange(lo, t + 1).expand(n, -1)
        logits = model(torch.stack(R[lo:], 1), torch.stack(S[lo:], 1), torch.stack(A[lo:], 1), times)
        last = logits[:, -1]
        action = (
            last.argmax(-1) if generator is None else torch.multinomial(last.softmax(-1), 1, generator=generator)[:, 0]
        )
        A[-1] = action
        nxt, reward, terminal = step_fn(state, action.numpy())
        reward = np.where(alive, reward, 0.0)
        total += reward
        lengths += alive
        # R̂_{t+1} = R̂_t − r_t
        rtg = rtg - torch.as_tensor(reward, dtype=rtg.dtype)
        state = np.where(alive, nxt, state)
        alive &= ~np.asarray(terminal, dtype=bool)
        visited.append(state.copy())
        if not alive.any():
            break
    return Rollouts(total, np.stack(visited, 1), lengths)

"""NetLLM — Adapting Large Language Models for Networking (Wu et al., SIGCOMM 2024), arXiv 2402.02338.

One pre-trained language model serves a networking task through three additions (here: adaptive bitrate
streaming, ABR, on the simulator of :mod:`labkit.substrates.abr`):

1. **Multimodal encoder.** Each part of the ABR state s_t (Pensieve's 6 × 6 array) gets its own small encoder —
   Linear + LeakyReLU for the scalars (last bitrate, buffer, chunks left), Conv1d(kernel 4) for the throughput and
   download-time series, Conv1d(kernel 6) for the next chunk's sizes — and a Linear into the LM's width d: six
   "state tokens" per step. The return-to-go R̂_t and the action a_t get Linear(1 → d) embeddings (the action as
   (ℓ + 1)/6), every token of step t adds a learned timestep embedding, and a LayerNorm closes the encoder:

       x = LN([e_R(R̂_1), e_s¹(s_1), …, e_s⁶(s_1), e_a(a_1), e_R(R̂_2), …]) + time,   8 tokens per step, (B, 8T, d)

2. **Networking head.** The LM reads x as embeddings (no text, no tokenizer) and a Linear(d → 6) on the hidden
   state of each step's LAST state token (offset 6 of its 8) gives the bitrate logits: one forward pass per
   decision, and every answer is a valid bitrate. (The ablation :data:`TOKEN_ANSWER` lets the LM *write* the
   level as text with its own LM head instead: a digit then ";", two decoding steps, and it can write nonsense.)

3. **Data-driven low-rank networking adaptation (DD-LRNA).** The LM's weights are frozen; LoRA matrices on its
   attention projections, the encoder and the head are trained on an offline experience pool collected by existing
   ABR rules, as a return-conditioned policy (a Decision Transformer):

       r̃_t = (clip(r_t) − r_min) / (r_max − r_min),   R̂_t = (1/scale) Σ_{t' ≥ t} r̃_{t'}          (γ = 1)
       L(θ) = −(1/BT) Σ_{b,t} log softmax(head(h_{b,t}))[a_{b,t}]                       (cross-entropy)

   At inference the target return starts at max(R̂) over the pool and drops by each obtained r̃_t/scale.

labkit's backbone is the kit's own tiny pre-trained transformer (:mod:`labkit.substrates.pretrained_lm`,
TinyLM pretrained on arithmetic strings) instead of Llama-2-7B; :func:`run_backbone` feeds it embeddings.
TinyLM fuses q, k and v into one ``qkv`` linear (as GPT-2's ``c_attn``), so LoRA sits on that fused map.
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
from labkit.substrates.abr import N_CHUNKS, N_LEVELS, Observation, Step

TOKENS_PER_STEP = 8  # [R̂, s¹, …, s⁶, a]
STATE_SLOT = 6  # the last state token of a step: its hidden state answers a_t
ACTION_SLOT = 7
NETWORKING_HEAD = "head"
TOKEN_ANSWER = "tokens"
#: the token-answer ablation writes level ℓ as the arithmetic LM's digit token ℓ, then its end token ";" (id 13)
END_TOKEN = 13
LORA_TARGETS = r"blocks\.\d+\.attn\.qkv"


# --------------------------------------------------------------------------------------------- the backbone


def run_backbone(backbone: nn.Module, embeds: torch.Tensor) -> torch.Tensor:
    """The LM's transformer blocks and final LayerNorm on given embeddings ``(B, L, d)`` → hidden ``(B, L, d)``
    (the LM's own token and position embeddings are bypassed: NetLLM feeds ``inputs_embeds``)."""
    h = embeds
    for block in backbone.blocks:
        h = block(h)
    return backbone.ln_f(h)


def low_rank_backbone(backbone: nn.Module, r: int, alpha: float, dropout: float) -> nn.Module:
    """A deep copy of ``backbone`` with every weight frozen and LoRA (rank r, scale α/r) on each ``qkv``."""
    lm = copy.deepcopy(backbone)
    inject_lora(lm, LORA_TARGETS, r=r, alpha=alpha, dropout=dropout)
    return lm


# --------------------------------------------------------------------------------------------- multimodal encoder


class StateEncoder(nn.Module):
    """Pensieve's per-feature encoders, each projected to the LM's width: state ``(B, T, 6, 6)`` → ``(B, T, 6, d)``."""

    def __init__(self, d_model: int, feature_dim: int, conv: int = 4, n_levels: int = N_LEVELS):
        super().__init__()
        F_, n = feature_dim, 6

        def scalar() -> nn.Module:  # one number → F → d
            return nn.Sequential(nn.Linear(1, F_), nn.LeakyReLU(), nn.Linear(F_, d_model))

        def series(kernel: int, length: int) -> nn.Module:  # a row of `length` numbers → Conv1d → d
            return nn.Sequential(
                nn.Conv1d(1, F_, kernel), nn.LeakyReLU(), nn.Flatten(), nn.Linear(F_ * (length - kernel + 1), d_model)
            )

        self.n_levels = n_levels
        self.last_bitrate, self.buffer, self.remaining = scalar(), scalar(), scalar()
        self.throughput, self.download = series(conv, n), series(conv, n)
        self.sizes = series(n_levels, n_levels)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        B, T = states.shape[:2]
        x = states.reshape(B * T, 6, 6)
        tokens = [
            self.last_bitrate(x[:, 0, -1:]),  # row 0: last bitrate (its newest value)
            self.buffer(x[:, 1, -1:]),  # row 1: buffer
            self.throughput(x[:, 2:3, :]),  # row 2: past 6 throughputs
            self.download(x[:, 3:4, :]),  # row 3: past 6 download times
            self.sizes(x[:, 4:5, : self.n_levels]),  # row 4: next chunk's sizes
            self.remaining(x[:, 5, -1:]),  # row 5: chunks left
        ]
        return torch.stack(tokens, dim=1).view(B, T, 6, -1)


class NetLLMPolicy(nn.Module):
    """Encoder → frozen LM with LoRA → networking head (``answer="head"``), or the LM's own token head
    (``answer="tokens"``, the ablation). ``backbone`` is used as given (adapt it with :func:`low_rank_backbone`)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, answer: str = NETWORKING_HEAD, max_steps: int = N_CHUNKS):
        super().__init__()
        if answer not in (NETWORKING_HEAD, TOKEN_ANSWER):
            raise ValueError(f"answer must be {NETWORKING_HEAD!r} or {TOKEN_ANSWER!r}, got {answer!r}")
        d = backbone.d_model
        self.backbone, self.answer = backbone, answer
        self.encoder = StateEncoder(d, feature_dim)
        self.embed_return = nn.Linear(1, d)
        self.embed_action = nn.Linear(1, d)
        self.embed_time = nn.Embedding(max_steps + 1, d)
        nn.init.normal_(self.embed_time.weight, std=0.02)  # GPT-2's init for position tables
        self.embed_ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, N_LEVELS) if answer == NETWORKING_HEAD else None

    def embed(self, states, actions, returns, timesteps) -> torch.Tensor:
        """The token sequence x ``(B, 8T, d)`` from states ``(B, T, 6, 6)``, actions ``(B, T)`` (levels, or token
        ids for the token answer), returns-to-go ``(B, T)`` and timesteps ``(B, T)``."""
        time = self.embed_time(timesteps)  # (B, T, d)
        r = self.embed_return(returns.unsqueeze(-1)) + time
        s = self.encoder(states) + time.unsqueeze(2)  # (B, T, 6, d)
        if self.answer == NETWORKING_HEAD:
            # the action as a number: e_a((ℓ + 1)/6)
            a = self.embed_action(((actions.float() + 1) / N_LEVELS).unsqueeze(-1)) + time
        else:  # the action as the LM's own token embedding of the digit it wrote
            a = self.backbone.tok(actions) + time
        x = torch.cat([r.unsqueeze(2), s, a.unsqueeze(2)], dim=2)  # (B, T, 8, d)
        return self.embed_ln(x.flatten(1, 2))

    def forward(self, states, actions, returns, timesteps) -> torch.Tensor:
        """Networking head: bitrate logits ``(B, T, 6)`` read at each step's last state token. Token answer: the LM
        head's logits ``(B, T, 2, V)`` at the last state token (the digit) and at the action token (the ";")."""
        h = run_backbone(self.backbone, self.embed(states, actions, returns, timesteps))
        h = h.view(h.shape[0], -1, TOKENS_PER_STEP, h.shape[-1])
        if self.answer == NETWORKING_HEAD:
            return self.head(h[:, :, STATE_SLOT])
        return self.backbone.head(h[:, :, [STATE_SLOT, ACTION_SLOT]])


# --------------------------------------------------------------------------------------------- the losses


def netllm_loss(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the networking head against the pool's actions; logits ``(B, T, 6)``, actions ``(B, T)``."""
    # L = −(1/BT) Σ_{b,t} log softmax(logits_{b,t})[a_{b,t}]
    return F.cross_entropy(logits.flatten(0, 1), actions.flatten())


def token_answer_loss(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """The token-answer ablation: the LM writes "ℓ;" — logits ``(B, T, 2, V)``, actions ``(B, T)`` (levels)."""
    target = torch.stack([actions, torch.full_like(actions, END_TOKEN)], dim=-1)  # (B, T, 2): digit ℓ, then ";"
    # L = −(1/2BT) Σ_{b,t} [log p(ℓ_{b,t} | x) + log p(";" | x, ℓ_{b,t})]
    return F.cross_entropy(logits.flatten(0, 2), target.flatten())


def normalised_rewards(rewards, r_min: float, r_max: float) -> torch.Tensor:
    """r̃ = (clip(r, r_min, r_max) − r_min) / (r_max − r_min), in [0, 1] (the official code's min-max)."""
    r = torch.as_tensor(rewards, dtype=torch.float32).clamp(r_min, r_max)
    return (r - r_min) / (r_max - r_min)


def returns_to_go(rewards, r_min: float, r_max: float, scale: float) -> torch.Tensor:
    """R̂_t = (1/scale) Σ_{t' ≥ t} r̃_{t'} per episode; rewards ``(E, N)`` → ``(E, N)``."""
    r = normalised_rewards(rewards, r_min, r_max)
    # reverse cumulative sum over the steps of each episode (γ = 1)
    return r.flip(-1).cumsum(-1).flip(-1) / scale


# --------------------------------------------------------------------------------------------- DD-LRNA


@dataclass(frozen=True)
class Trajectories:
    """The experience pool as tensors: ``states (E, N, 6, 6)``, ``actions (E, N)``, ``returns (E, N)`` (R̂)."""

    states: torch.Tensor
    actions: torch.Tensor
    returns: torch.Tensor

    def windows(self, episode: torch.Tensor, start: torch.Tensor, w: int):
        """``w`` consecutive steps from ``start`` of each ``episode`` (B,): states, actions, returns, timesteps."""
        device = self.states.device
        t = (start.unsqueeze(1) + torch.arange(w)).to(device)  # (B, w)
        e = episode.unsqueeze(1).to(device)
        return self.states[e, t], self.actions[e, t], self.returns[e, t], t

    def to(self, device) -> Trajectories:
        return Trajectories(self.states.to(device), self.actions.to(device), self.returns.to(device))


def dd_lrna(
    policy: NetLLMPolicy,
    data: Trajectories,
    *,
    steps: int,
    batch_size: int,
    window: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    clip: float,
    generator: torch.Generator,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> list[float]:
    """DD-LRNA: AdamW on the trainable parameters only (LoRA, encoder, embeddings, head; the LM stays frozen),
    linear warm-up, gradient-norm clipping, ``steps`` mini-batches of ``batch_size`` windows of ``window`` steps
    drawn uniformly from the pool. ``on_step(step, loss)`` sees every loss. Returns the losses."""
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    E, N = data.actions.shape
    loss_fn = netllm_loss if policy.answer == NETWORKING_HEAD else token_answer_loss
    policy.train()
    losses = []
    for step in range(1, steps + 1):
        episode = torch.randint(0, E, (batch_size,), generator=generator)
        start = torch.randint(0, N - window + 1, (batch_size,), generator=generator)
        states, actions, returns, t = data.windows(episode, start, window)
        logits = policy(states, actions, returns, t)
        loss = loss_fn(logits, actions)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, clip)
        # linear warm-up: lr_s = lr · min(s / warmup, 1)
        for group in opt.param_groups:
            group["lr"] = lr * min(step / max(warmup, 1), 1.0)
        opt.step()
        if on_step is not None:
            on_step(step, loss)
        losses.append(float(loss.detach()))
    policy.eval()
    return losses


# --------------------------------------------------------------------------------------------- inference


class NetLLMAgent:
    """The adapted policy playing the simulator (a :class:`labkit.substrates.abr.Policy`): a context of the last
    ``window`` steps, a target return that drops by each obtained r̃_t/scale, argmax decisions.

    Networking head: ONE forward pass per chunk. Token answer: two (the digit, then the ";"); an answer that is
    not "ℓ;" with ℓ ∈ 0..5 is invalid, counted in ``invalid`` and replaced by the lowest level."""

    def __init__(self, policy: NetLLMPolicy, window: int, target_return: float, r_min: float, r_max: float, scale):
        self.policy, self.window, self.target = policy, window, target_return
        self.r_min, self.r_max, self.scale = r_min, r_max, scale
        self.forwards = self.decisions = self.invalid = 0

    def reset(self, n: int) -> None:
        self.policy.eval()  # no LoRA dropout while playing
        self.device = next(self.policy.parameters()).device
        self.states, self.actions, self.returns = [], [], []
        self.written: torch.Tensor | None = None  # the token answer's last digit, as the LM wrote it
        self.rtg = torch.full((n,), float(self.target), device=self.device)

    def _forward(self, current_action: torch.Tensor) -> torch.Tensor:
        T = min(self.window, len(self.states))
        states = torch.stack(self.states[-T:], 1)
        past = self.actions[len(self.states) - T :]  # the T − 1 earlier actions in the window
        actions = torch.stack([*past, current_action], 1)
        returns = torch.stack(self.returns[-T:], 1)
        t0 = len(self.states) - T
        timesteps = torch.arange(t0, t0 + T, device=self.device).expand(states.shape[0], T)
        self.forwards += 1
        return self.policy(states, actions, returns, timesteps)[:, -1]

    @torch.no_grad()
    def act(self, obs: Observation) -> np.ndarray:
        self.states.append(torch.as_tensor(obs.state, dtype=torch.float32, device=self.device))
        self.returns.append(self.rtg.clone())
        n = obs.state.shape[0]
        self.decisions += n
        placeholder = torch.zeros(n, dtype=torch.long, device=self.device)  # the current action's token comes later
        if self.policy.answer == NETWORKING_HEAD:
            return self._forward(placeholder).argmax(-1).cpu().numpy()
        digit = self._forward(placeholder)[:, 0].argmax(-1)  # decoding step 1: the digit
        end = self._forward(digit)[:, 1].argmax(-1)  # decoding step 2: the end token, after the digit
        valid = (digit < N_LEVELS) & (end == END_TOKEN)
        self.invalid += int((~valid).sum())
        self.written = digit  # what the LM wrote is what its context shows next time
        return torch.where(valid, digit, torch.zeros_like(digit)).cpu().numpy()

    def update(self, levels: np.ndarray, step: Step) -> None:
        shown = self.written if self.policy.answer == TOKEN_ANSWER else None
        self.actions.append(shown if shown is not None else torch.as_tensor(levels, device=self.device))
        # R̂_{t+1} = R̂_t − r̃_t / scale
        self.rtg = self.rtg - normalised_rewards(step.qoe, self.r_min, self.r_max).to(self.device) / self.scale

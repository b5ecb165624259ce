"""A tiny causal language model and the bookkeeping every alignment method needs around it.

A prompt x is a ``(B, P)`` LongTensor, a response y a ``(B, L)`` LongTensor (fixed lengths; an optional
``mask (B, L)`` marks the response tokens that count, e.g. up to and including an EOS). The model reads
the concatenation [x; y] and the log-prob of the response is

    log π(y|x) = Σ_t mask_t · log π(y_t | x, y_<t)                (a SUM over response tokens)

The logits at position P−1+t predict y_t. Prompt tokens are never scored.

Pieces: :class:`TinyLM` (a 2-layer pre-LayerNorm transformer, learned positions), :class:`TinyGRULM`
(a GRU with the same interface), :func:`sequence_logprobs` / :func:`token_logprobs`, :func:`sample` /
:func:`greedy`, :func:`frozen_copy` for π_ref, :func:`kl_on_samples` (Monte-Carlo KL(π‖π_ref)),
:func:`per_token_kl` (exact KL of the next-token distributions on given responses) and :func:`train_nll`.
Everything runs on the device of the model; tiny tensors are fastest on one CPU thread.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

# --------------------------------------------------------------------------------------------- models


class CausalSelfAttention(nn.Module):
    """softmax(QKᵀ/√d_h + causal mask)·V over ``n_heads`` heads, then an output projection.

    Optional prefix tuning (off by default; :func:`labkit.models.adapters.add_prefix` turns it on): ``prefix`` is
    a module whose call returns learned keys and values ``(n_v, d_model)`` that are put in front of the sequence's
    own keys and values, so every position attends to them: K = [P_k; K], V = [P_v; V]. They take no position.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.prefix: nn.Module | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, T, D = h.shape
        q, k, v = self.qkv(h).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        future = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(1)
        if self.prefix is not None:
            k, v, future = self._with_prefix(k, v, future)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // self.n_heads)  # (B, heads, T, [n_v +] T)
        att = scores.masked_fill(future, float("-inf")).softmax(-1)
        return self.out((att @ v).transpose(1, 2).reshape(B, T, D))

    def _with_prefix(
        self, k: torch.Tensor, v: torch.Tensor, future: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """K = [P_k; K], V = [P_v; V] ``(B, heads, n_v + T, d_h)``; the mask ``(T, n_v + T)`` never hides the prefix."""
        p_k, p_v = self.prefix()  # (n_v, d_model) each
        B, H, T, d_h = k.shape
        n_v = p_k.shape[0]

        def per_head(p: torch.Tensor) -> torch.Tensor:  # (n_v, H·d_h) → (B, H, n_v, d_h)
            return p.view(n_v, H, d_h).transpose(0, 1).expand(B, H, n_v, d_h)

        k = torch.cat([per_head(p_k), k], dim=2)
        v = torch.cat([per_head(p_v), v], dim=2)
        return k, v, torch.cat([future.new_zeros(T, n_v), future], dim=1)


class Block(nn.Module):
    """Pre-LN transformer block: h + Attn(LN(h)), then h + MLP(LN(h)) with a 4× GELU MLP."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.ln1(h))
        return h + self.mlp(self.ln2(h))


class TinyLM(nn.Module):
    """Token + learned position embeddings → ``n_layers`` causal blocks → LayerNorm → logits over V.

    ``max_len`` bounds the prompt + response length. ``hidden(tokens)`` gives the final states ``(B, T, d)``
    (for value heads and reward scorers), ``forward(tokens)`` the next-token logits ``(B, T, V)``.

    >>> TinyLM(vocab_size=12, max_len=10)(torch.zeros(3, 10, dtype=torch.long)).shape
    torch.Size([3, 10, 12])
    """

    def __init__(self, vocab_size: int, max_len: int, d_model: int = 48, n_layers: int = 2, n_heads: int = 4):
        super().__init__()
        self.vocab_size, self.max_len, self.d_model = vocab_size, max_len, d_model
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.apply(_small_init)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]
        if T > self.max_len:
            raise ValueError(f"sequence of length {T} is longer than max_len={self.max_len}")
        h = self.tok(tokens) + self.pos(torch.arange(T, device=tokens.device))
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(tokens))


class TinyGRULM(nn.Module):
    """Embedding → one GRU layer → logits; the same interface as :class:`TinyLM` (``hidden``, ``forward``).

    >>> TinyGRULM(vocab_size=25)(torch.zeros(2, 9, dtype=torch.long)).shape
    torch.Size([2, 9, 25])
    """

    def __init__(self, vocab_size: int, d_embed: int = 32, d_model: int = 64, max_len: int | None = None):
        super().__init__()
        self.vocab_size, self.d_model, self.max_len = vocab_size, d_model, max_len
        self.tok = nn.Embedding(vocab_size, d_embed)
        self.gru = nn.GRU(d_embed, d_model, batch_first=True)
        self.head = nn.Linear(d_model, vocab_size)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.gru(self.tok(tokens))[0]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(tokens))


def _small_init(module: nn.Module) -> None:
    """N(0, 0.02²) weights and zero biases (GPT-2's initialisation): near-uniform next-token distributions."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with ``requires_grad=False`` everywhere: the reference π_ref (or π_t)."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


# --------------------------------------------------------------------------------------------- log-probs


def response_logits(model: nn.Module, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Logits that predict each response token: row t is the model's output at position P−1+t. ``(B, L, V)``."""
    P, L = prompts.shape[1], responses.shape[1]
    logits = model(torch.cat([prompts, responses], dim=1))
    return logits[:, P - 1 : P - 1 + L]


def token_logprobs(
    model: nn.Module, prompts: torch.Tensor, responses: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """log π(y_t | x, y_<t) for every response token, zero where ``mask`` is False. ``(B, L)``."""
    logp = response_logits(model, prompts, responses).log_softmax(-1)
    out = logp.gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    return out if mask is None else out * mask.to(out.dtype)


def sequence_logprobs(
    model: nn.Module, prompts: torch.Tensor, responses: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """log π(y|x) = Σ_t mask_t · log π(y_t | x, y_<t), the SUM over response tokens. ``(B,)``.

    Divide by ``mask.sum(1)`` (or L) yourself for the per-token mean (TRL's IPO, SuperHF's CE).
    """
    return token_logprobs(model, prompts, responses, mask).sum(-1)


def response_mask(responses: torch.Tensor, eos: int) -> torch.Tensor:
    """True up to and including the first ``eos`` of each response (everything if there is none). ``(B, L)``."""
    is_eos = (responses == eos).long()
    before = is_eos.cumsum(1) - is_eos  # EOS tokens strictly before t
    return before == 0


# --------------------------------------------------------------------------------------------- decoding


@torch.no_grad()
def sample(
    model: nn.Module,
    prompts: torch.Tensor,
    length: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    top_p: float = 1.0,
    eos: int | None = None,
) -> torch.Tensor:
    """Draw ``length`` tokens autoregressively, y_t ~ softmax(logits_t / T) (restricted to the top-p nucleus).

    ``temperature`` T → 0 approaches :func:`greedy`; T = 1 with ``top_p=1`` samples π itself (use that for
    KL estimates and on-policy losses). ``generator`` must live on the model's device. With ``eos`` set,
    every token after the first EOS is replaced by EOS (see :func:`response_mask`). Returns ``(B, length)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature}); use greedy() for T → 0")
    was_training = model.training
    model.eval()
    seq = prompts
    for _ in range(length):
        logits = model(seq)[:, -1] / temperature
        probs = nucleus(logits.softmax(-1), top_p)
        nxt = torch.multinomial(probs, 1, generator=generator)
        seq = torch.cat([seq, nxt], dim=1)
    model.train(was_training)
    out = seq[:, prompts.shape[1] :]
    return out if eos is None else torch.where(response_mask(out, eos), out, torch.full_like(out, eos))


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Top-p filter: keep the most probable tokens until their mass reaches ``top_p`` (the first always),
    renormalise."""
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(-1, descending=True)
    keep_sorted = (sorted_p.cumsum(-1) - sorted_p) < top_p  # mass strictly before each token
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)


@torch.no_grad()
def greedy(model: nn.Module, prompts: torch.Tensor, length: int) -> torch.Tensor:
    """y_t = argmax_v π(v | x, y_<t) for ``length`` steps (deterministic evaluation). ``(B, length)``."""
    was_training = model.training
    model.eval()
    seq = prompts
    for _ in range(length):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    model.train(was_training)
    return seq[:, prompts.shape[1] :]


# --------------------------------------------------------------------------------------------- KL


@torch.no_grad()
def kl_on_samples(
    policy: nn.Module,
    ref: nn.Module,
    prompts: torch.Tensor,
    responses: torch.Tensor,
    mask: torch.Tensor | None = None,
    estimator: str = "k1",
) -> torch.Tensor:
    """Monte-Carlo estimate of the sequence-level KL(π‖π_ref) from responses y_n ~ π(·|x_n) (T = 1):

        k1:  KL ≈ (1/N) Σ_n [log π(y_n|x_n) − log π_ref(y_n|x_n)]                  unbiased, can be < 0
        k3:  KL ≈ (1/N) Σ_n [(ρ_n − 1) − log ρ_n],  ρ_n = π_ref(y_n|x_n)/π(y_n|x_n)  unbiased, every term ≥ 0

    (E_π[ρ] = 1, so the (ρ − 1) term only removes variance.) The responses MUST come from ``policy`` at
    temperature 1; the log-ratio on preference data is not the KL. Returns a scalar tensor.
    """
    log_ratio = sequence_logprobs(policy, prompts, responses, mask) - sequence_logprobs(ref, prompts, responses, mask)
    if estimator == "k1":
        return log_ratio.mean()
    if estimator == "k3":
        return (torch.expm1(-log_ratio) + log_ratio).mean()
    raise ValueError(f"unknown KL estimator {estimator!r}: choose 'k1' or 'k3'")


def per_token_kl(
    model_p: nn.Module,
    model_q: nn.Module,
    prompts: torch.Tensor,
    responses: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact KL of the next-token distributions at every response position, KL(p‖q):

        KL_t = Σ_v p(v | x, y_<t) · (log p(v | x, y_<t) − log q(v | x, y_<t)),   zero where ``mask`` is False.

    The argument order IS the direction: SuperHF's prior is ``per_token_kl(ref, policy, ...)`` = KL(π_0‖π_θ).
    Gradients flow into whichever model has them. ``(B, L)``.
    """
    logp = response_logits(model_p, prompts, responses).log_softmax(-1)
    logq = response_logits(model_q, prompts, responses).log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return kl if mask is None else kl * mask.to(kl.dtype)


# --------------------------------------------------------------------------------------------- SFT


def prompt_features(model: nn.Module, prompts: torch.Tensor) -> torch.Tensor:
    """Mean over prompt positions of the model's final hidden states, detached: the input of a value head.
    ``(B, d)``."""
    with torch.no_grad():
        return model.hidden(prompts).mean(1)


def nll_loss(
    model: nn.Module,
    prompts: torch.Tensor,
    responses: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the batch of w_b · (−log π(y_b|x_b) / |y_b|): the token-mean NLL of each response (prompt not
    scored), optionally weighted per example (reward-weighted BC). A scalar."""
    lengths = responses.new_full((responses.shape[0],), responses.shape[1]).float() if mask is None else mask.sum(1)
    per_example = -sequence_logprobs(model, prompts, responses, mask) / lengths.clamp_min(1)
    if weights is not None:
        per_example = per_example * weights
    return per_example.mean()


def train_nll(
    model: nn.Module,
    prompts: torch.Tensor,
    responses: torch.Tensor,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    weight_decay: float = 0.0,
    series: str = "nll",
) -> list[float]:
    """Supervised fine-tuning: ``steps`` AdamW steps on :func:`nll_loss` over random mini-batches (drawn with
    replacement-free shuffles from ``generator``, a CPU generator). Trains ``model`` in place; returns the losses.
    A NaN/inf loss or a weight beyond ``WEIGHT_LIMIT`` raises ``DivergenceError`` naming ``series`` and the step."""
    from labkit.core.training import check_finite, check_weights

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    n = prompts.shape[0]
    losses, order, pos = [], torch.randperm(n, generator=generator), 0
    for step in range(1, steps + 1):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=generator), 0
        idx = order[pos : pos + batch_size].to(prompts.device)
        pos += batch_size
        loss = nll_loss(
            model,
            prompts[idx],
            responses[idx],
            None if mask is None else mask[idx],
            None if weights is None else weights[idx],
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(check_finite(loss, step, series))
        check_weights(model, step, series)
    return losses

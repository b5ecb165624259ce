"""LOL — "Lower Layer Matters: Alleviating Hallucination via Multi-Layer Fusion Contrastive Decoding with
Truthfulness Refocused" (Chen et al., 2024), arXiv 2408.08769. With the decoding rules it builds on and is
compared against: contrastive decoding (CD, Li et al. 2023, arXiv 2210.15097), DoLa (Chuang et al. 2024,
arXiv 2309.03883) and induce-then-contrast decoding (ICD, Zhang et al. 2023, arXiv 2312.15710).

A model M with L blocks; q^(j)(·|x) = softmax(head(ln_f(h^(j)(x)))) is its EARLY-EXIT next-token distribution after
block j (j = 0 is the embeddings, j = L the normal output). The amateur A is M fine-tuned on false statements
("induced hallucinations"); S is a smaller model trained on the same corpus (CD's amateur).

    APC          V_head(x) = {v : q_M^(L)(v|x) ≥ β_apc · max_w q_M^(L)(w|x)}; tokens outside get MASKED
    CD           s(v) = log q_M^(L)(v) − log q_S^(L)(v)                                on V_head
    DoLa         s(v) = log q_M^(L)(v) − log q_M^(m)(v),  m = argmax_{j∈J} JSD(q_M^(L) ‖ q_M^(j)), per token
    ICD          s(v) = (1 + α)·log q_M^(L)(v) − α·log q_A^(L)(v)                       on V_head
    LOL          F_L(v) = (1 + α)·log q̃_M^(L)(v) − α·log q_A^(L)(v)                     final-layer contrast
                 F_ℓ(v) = (1 + α)·log q̃_M^(ℓ)(v) − α·log q_A^(ℓ)(v)                     lower-layer contrast
                 F(v)   = F_L(v) + ω·F_ℓ(v)                                             fusion, on V_head of q̃_M^(L)
    refocusing   q̃_M = M run on the input with a truthfulness instruction put in front; A sees the plain input

Decoding takes argmax_v of the score (greedy); multiple-choice scoring (TruthfulQA MC1/MC2) reads the score of each
candidate answer. The abstract fixes LOL's structure; the exact weights, the choice of ℓ and the instruction are a
reconstruction (no official code is public): α, ω, ℓ are knobs chosen on held-out entities.

What the official codes of the predecessors do (read, not copied; HillZhang1999/ICD, voidism/DoLa): ICD subtracts
with weight one, s = log q_M − log q_A, which the (1 + α) form here approaches as α grows (it ranks like
log q_M + α·(log q_M − log q_A)); both score TruthfulQA multiple choice with the plausibility constraint OFF
(``relative_top = 0``) and without renormalising the contrast (β_apc = 0 here gives that); DoLa's early exit applies
the LM head to an intermediate layer's raw state (LLaMA's final norm only on the last), where this kit, as the card
asks, passes it through ``ln_f`` first: a pre-LN TinyLM's raw lower states give meaningless logits.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from labkit.core.training import check_finite, check_weights
from labkit.models.tiny_lm import TinyLM

#: the score of a token outside V_head: finite (as the official CD/DoLa/ICD codes' ``relative_top_value``), so a
#: multiple-choice question whose answers all fall outside the head ties instead of giving NaN
MASKED = -1000.0

# --- early exit: a lower layer's next-token distribution -----------------------------------------------------


def early_exit_logprobs(model: TinyLM, tokens: Tensor, layers) -> Tensor:
    """log q^(j)(·|x) at the LAST position for every j in ``layers`` (0 = embeddings … L = the model's output).
    ``tokens (B, T)`` → ``(len(layers), B, V)``. The hidden state goes through the final LayerNorm before the LM
    head, as the output layer does (raw hidden states give meaningless logits)."""
    wanted = sorted(set(layers))
    if wanted[0] < 0 or wanted[-1] > len(model.blocks):
        raise ValueError(f"layers {list(layers)} must be in [0, {len(model.blocks)}]")
    T = tokens.shape[1]
    # h^(0) = token + position embeddings                                                          (B, T, d)
    h = model.tok(tokens) + model.pos(torch.arange(T, device=tokens.device))
    out = {}
    for j in range(wanted[-1] + 1):
        if j > 0:
            h = model.blocks[j - 1](h)  # h^(j) = block_j(h^(j−1))
        if j in out or j not in wanted:
            continue
        # log q^(j)(·|x) = log softmax(head(ln_f(h^(j)_T)))                                          (B, V)
        out[j] = model.head(model.ln_f(h[:, -1])).log_softmax(-1)
    return torch.stack([out[j] for j in layers])


def refocus(prompts: Tensor, instruction: Tensor) -> Tensor:
    """Truthfulness refocusing: put the instruction tokens right after the first (BOS) token.
    ``prompts (B, P)``, ``instruction (I,)`` → ``(B, P + I)``."""
    head = instruction.to(prompts.device).expand(prompts.shape[0], -1)
    return torch.cat([prompts[:, :1], head, prompts[:, 1:]], dim=1)


# --- the decoding rules: each maps log-probs (B, V) to scores (B, V) ------------------------------------------


def plausible_head(logq: Tensor, beta_apc: float) -> Tensor:
    """The adaptive plausibility constraint's V_head, a bool mask ``(B, V)`` from ``logq (B, V)``.
    β_apc = 0 keeps every token (the official MC evaluations of DoLa and ICD run with it off)."""
    if beta_apc <= 0:
        return torch.ones_like(logq, dtype=torch.bool)
    # v ∈ V_head ⇔ log q(v) ≥ log β_apc + max_w log q(w)
    return logq >= math.log(beta_apc) + logq.max(-1, keepdim=True).values


def restrict(scores: Tensor, head: Tensor) -> Tensor:
    """Scores on V_head, :data:`MASKED` elsewhere. ``(B, V)``."""
    return torch.where(head, scores, torch.full_like(scores, MASKED))


def contrast(logq_expert: Tensor, logq_amateur: Tensor, alpha: float) -> Tensor:
    """The amplified contrast of ICD and LOL, ``(B, V)``: (1 + α)·log q_E − α·log q_A = log q_E + α·(log q_E − log q_A).
    α = 0 is the expert alone."""
    # F(v) = (1 + α)·log q_E(v) − α·log q_A(v)
    return (1 + alpha) * logq_expert - alpha * logq_amateur


def cd_scores(logq_expert: Tensor, logq_small: Tensor, beta_apc: float) -> Tensor:
    """Contrastive decoding (Li et al.): expert minus a smaller amateur, on the expert's V_head. ``(B, V)``."""
    # s(v) = log q_M(v) − log q_S(v)   for v ∈ V_head(q_M)
    return restrict(logq_expert - logq_small, plausible_head(logq_expert, beta_apc))


def icd_scores(logq_model: Tensor, logq_amateur: Tensor, alpha: float, beta_apc: float) -> Tensor:
    """Induce-then-contrast: the model against its hallucination-induced copy, final layer only. ``(B, V)``."""
    # s(v) = (1 + α)·log q_M^(L)(v) − α·log q_A^(L)(v)   for v ∈ V_head(q_M^(L))
    return restrict(contrast(logq_model, logq_amateur, alpha), plausible_head(logq_model, beta_apc))


def jsd(logp: Tensor, logq: Tensor) -> Tensor:
    """Jensen–Shannon divergence over the last axis (nats), with broadcasting. JSD(p‖q) = ½KL(p‖m) + ½KL(q‖m),
    m = (p + q)/2."""
    # log m = log((p + q)/2)
    logm = torch.logaddexp(logp, logq) - math.log(2.0)

    def kl_to_m(logx: Tensor) -> Tensor:  # Σ x·(log x − log m), with 0·log 0 = 0
        x = logx.exp()
        return torch.where(x > 0, x * (logx - logm), torch.zeros_like(x)).sum(-1)

    # ½·KL(p‖m) + ½·KL(q‖m)
    return 0.5 * kl_to_m(logp) + 0.5 * kl_to_m(logq)


def dola_scores(logq_final: Tensor, logq_candidates: Tensor, beta_apc: float) -> tuple[Tensor, Tensor]:
    """DoLa: contrast the final layer with the premature layer whose distribution differs from it most (by JSD),
    chosen anew for every row. ``logq_final (B, V)``, ``logq_candidates (J, B, V)`` → scores ``(B, V)`` and the
    index into the J candidates that each row used ``(B,)``."""
    # m = argmax_j JSD(q^(L) ‖ q^(j))                                                              (B,)
    chosen = jsd(logq_final.unsqueeze(0), logq_candidates).argmax(0)
    # log q^(m)(v) for each row's own premature layer                                              (B, V)
    premature = logq_candidates.gather(0, chosen.view(1, -1, 1).expand(1, *logq_final.shape)).squeeze(0)
    # s(v) = log q^(L)(v) − log q^(m)(v)   for v ∈ V_head(q^(L))
    return restrict(logq_final - premature, plausible_head(logq_final, beta_apc)), chosen


def lol_scores(
    logq_model_final: Tensor,
    logq_model_lower: Tensor,
    logq_amateur_final: Tensor,
    logq_amateur_lower: Tensor,
    alpha: float,
    omega: float,
    beta_apc: float,
) -> Tensor:
    """LOL's multi-layer fusion (the model side already refocused by the caller). Every argument is ``(B, V)``
    log-probs; the final layer is L, the lower one ℓ. Returns ``(B, V)``."""
    # F_L(v) = (1 + α)·log q̃_M^(L)(v) − α·log q_A^(L)(v)
    final = contrast(logq_model_final, logq_amateur_final, alpha)
    # F_ℓ(v) = (1 + α)·log q̃_M^(ℓ)(v) − α·log q_A^(ℓ)(v)
    lower = contrast(logq_model_lower, logq_amateur_lower, alpha)
    # F(v) = F_L(v) + ω·F_ℓ(v), restricted to V_head of the refocused model's final layer
    return restrict(final + omega * lower, plausible_head(logq_model_final, beta_apc))


# --- the algorithm: one LOL decoding step, and greedy generation --------------------------------------------


@torch.no_grad()
def lol_step(
    model: TinyLM,
    amateur: TinyLM,
    prompts: Tensor,
    instruction: Tensor | None,
    *,
    layer: int,
    alpha: float,
    omega: float,
    beta_apc: float,
) -> Tensor:
    """LOL's scores for the next token after ``prompts (B, P)``. ``instruction`` (token ids) turns the truthfulness
    refocusing on (None: off). Returns ``(B, V)``; the next token is its argmax."""
    L = len(model.blocks)
    # the refocused model reads "instruction + x", the amateur the plain x
    model_input = prompts if instruction is None else refocus(prompts, instruction)
    logq_M_L, logq_M_l = early_exit_logprobs(model, model_input, [L, layer])
    logq_A_L, logq_A_l = early_exit_logprobs(amateur, prompts, [L, layer])
    return lol_scores(logq_M_L, logq_M_l, logq_A_L, logq_A_l, alpha, omega, beta_apc)


@torch.no_grad()
def lol_generate(model: TinyLM, amateur: TinyLM, prompts: Tensor, length: int, instruction=None, **knobs) -> Tensor:
    """Greedy LOL decoding for ``length`` tokens: at every step take y_t = argmax_v F(v | x, y_<t) (:func:`lol_step`)
    and append it to the input of both models. ``knobs``: layer, alpha, omega, beta_apc. ``(B, length)``."""
    model.eval()
    amateur.eval()
    seq = prompts
    for _ in range(length):
        nxt = lol_step(model, amateur, seq, instruction, **knobs).argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[:, prompts.shape[1] :]


# --- inducing hallucinations: the amateur of ICD and LOL ----------------------------------------------------


def answer_nll(model: TinyLM, tokens: Tensor, answer_pos: Tensor) -> Tensor:
    """Mean over the batch of −log q(y|x): the NLL of each sentence's answer token at ``answer_pos``.
    ``tokens (B, T)`` right-padded, ``answer_pos (B,)``. A scalar."""
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    # the state at position p − 1 predicts the token at p: only those rows go through the LM head
    logq = model.head(model.hidden(tokens)[rows, answer_pos - 1]).log_softmax(-1)  # (B, V)
    return -logq[rows, tokens[rows, answer_pos]].mean()


def fit_answers(
    model: TinyLM,
    tokens: Tensor,
    answer_pos: Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    series: str,
    on_step=None,
) -> list[float]:
    """``steps`` AdamW steps on :func:`answer_nll` over shuffled mini-batches (CPU ``generator``), in place, the
    learning rate constant and then decaying linearly to 0 over the last 30% of the steps. Each loss is checked
    (NaN/inf), the weights every 10 steps and at the end (NaN/inf or beyond 1e6): ``DivergenceError`` names
    ``series`` and the step. ``on_step(step, loss)`` sees each step. Returns the losses."""
    fused = tokens.device.type in ("cpu", "cuda")  # one kernel for the whole update: ~5× faster on tiny models
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=fused or None)
    model.train()
    n, losses, pos = tokens.shape[0], [], 0
    order = torch.randperm(n, generator=generator)
    for step in range(1, steps + 1):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=generator), 0
        idx = order[pos : pos + batch_size].to(tokens.device)
        pos += batch_size
        loss = answer_nll(model, tokens[idx], answer_pos[idx])
        for group in opt.param_groups:  # linear decay to 0 over the last 30% of the steps
            group["lr"] = lr * min(1.0, (steps - step + 1) / max(1, round(0.3 * steps)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(check_finite(loss, step, series))
        if step % 10 == 0 or step == steps:  # weights: NaN/inf, or a finite run-off beyond 1e6
            check_weights(model, step, series)
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses


def induce_amateur(model: TinyLM, false_tokens: Tensor, answer_pos: Tensor, **fit) -> TinyLM:
    """ICD's "induce" step: a copy of the model fine-tuned on non-factual statements only (``fit``: the keyword
    arguments of :func:`fit_answers`). The original is left untouched."""
    amateur = copy.deepcopy(model)
    fit_answers(amateur, false_tokens, answer_pos, **fit)
    return amateur


# --- multiple-choice scoring (TruthfulQA MC1 / MC2) ---------------------------------------------------------


def candidate_scores(scores: Tensor, candidates: Tensor) -> Tensor:
    """The score of each one-token candidate answer: ``scores (B, V)``, ``candidates (B, K)`` → ``(B, K)``."""
    return scores.gather(-1, candidates)


def mc1(cand: Tensor) -> Tensor:
    """MC1 per question: 1 when the true answer (column 0) scores STRICTLY above every false one (a tie is wrong,
    as in TruthfulQA's code). ``(B, K)`` → ``(B,)`` float."""
    return (cand[:, 0] > cand[:, 1:].max(-1).values).float()


def mc2(cand: Tensor) -> Tensor:
    """MC2 per question: the normalised probability mass on the true answer, exp(s_true) / Σ_k exp(s_k).
    ``(B, K)`` → ``(B,)``."""
    # exp(s_0) / Σ_k exp(s_k) = softmax(s)_0
    return cand.softmax(-1)[:, 0]

"""22 · LLM-Adapters — "LLM-Adapters: An Adapter Family for Parameter-Efficient Fine-Tuning of Large Language
Models" (Hu, Wang, Lan, Xu, Lim, Bing, Xu, Poria, Lee; EMNLP 2023), arXiv 2304.01933.

The paper puts four families of parameter-efficient fine-tuning (PEFT) into one framework and asks *where* in a
decoder block each module should sit and *how big* it should be. The base model is frozen; only the modules train.
With a hidden vector h (d,), a frozen sub-layer f (attention or MLP), a frozen linear map W (d_out, d_in), a
bottleneck size or rank r, σ = tanh and s = 1 (the official code):

    series    after f:    h = f(x),   h' = h + s · U σ(D h)          D (r, d), U (d, r)        2·d·r parameters
    parallel  beside f:   h' = f(x) + s · U σ(D x)                   D (r, d), U (d, r)        2·d·r parameters
    LoRA      on W:       y = W x + (α/r) · B A x                    A (r, d_in), B (d_out, r)  r·(d_in + d_out)
    prefix    in attn:    K = [P_k; K],  V = [P_v; V]                P_k, P_v (n_v, d)          2·n_v·d per layer

(the modules themselves are written once, in :mod:`labkit.models.adapters`). The paper's best placements: series
after the MLP, parallel beside the MLP, LoRA on attention AND MLP; prefix tuning (10 virtual tokens) lags behind.
This file names those placements as target sets (:data:`SITES`, :func:`placement_targets`), attaches a module of
each family (:func:`attach`), counts parameters by formula (:func:`formula_parameters`), and gives the fine-tuning
loop (:func:`finetune`):

    L = −(1/|y|) Σ_t log π(y_t | x, y_<t)       the ANSWER tokens y only (answer-only masking, labkit's default)
    L = −(1/(|x'| + |y|)) [Σ_t log π(x_t | x_<t) + Σ_t log π(y_t | x, y_<t)]     ``train_on_inputs=True``

The official script's default is ``train_on_inputs=True`` (the prompt's tokens are scored too; x' is the prompt
without its padding and first token); the card's pitfall says to mask them in the toy, so labkit does, and the
flag shows the other choice. The optimiser is the official one: AdamW, a linear warm-up then a linear decay to 0
(the Hugging Face Trainer's default schedule), updating the trainable parameters only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from labkit.core.training import check_finite, check_weights, endless_minibatches
from labkit.data.arithmetic import Task
from labkit.models.adapters import add_prefix, inject_adapters
from labkit.models.tiny_lm import CausalSelfAttention

FAMILIES = ("series", "parallel", "lora", "prefix")
PLACEMENTS = ("attention", "mlp", "both")
#: the paper's best placement of each family (its placement study on LLaMA-7B, math)
BEST_PLACEMENT = {"series": "mlp", "parallel": "mlp", "lora": "both", "prefix": "attention"}


# --- where the modules go ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sites:
    """The insertion points of one architecture, as regexes (full match) of qualified module names: the attention
    and MLP sub-layers as a whole (series after, parallel beside), and their linear layers (LoRA)."""

    attention: str
    mlp: str
    attention_linears: str
    mlp_linears: str


SITES = {
    # labkit's TinyLM: blocks[i].attn (qkv, out) and blocks[i].mlp = Sequential(Linear, GELU, Linear)
    "tinylm": Sites(
        r"blocks\.\d+\.attn", r"blocks\.\d+\.mlp", r"blocks\.\d+\.attn\.(qkv|out)", r"blocks\.\d+\.mlp\.[02]"
    ),
    # Hugging Face GPT-2 (Conv1D layers), also inside labkit's HFCausalLM wrapper ("model." in front)
    "gpt2": Sites(
        r"(.+\.)?h\.\d+\.attn",
        r"(.+\.)?h\.\d+\.mlp",
        r"(.+\.)?h\.\d+\.attn\.c_(attn|proj)",
        r"(.+\.)?h\.\d+\.mlp\.c_(fc|proj)",
    ),
    # Hugging Face LLaMA
    "llama": Sites(
        r"(.+\.)?layers\.\d+\.self_attn",
        r"(.+\.)?layers\.\d+\.mlp",
        r"(.+\.)?layers\.\d+\.self_attn\.[qkvo]_proj",
        r"(.+\.)?layers\.\d+\.mlp\.(gate|up|down)_proj",
    ),
}


def architecture_of(model: nn.Module) -> str:
    """``"tinylm"`` (labkit's attention layers), or the Hugging Face ``config.model_type`` found in the model."""
    if any(isinstance(m, CausalSelfAttention) for m in model.modules()):
        return "tinylm"
    for m in model.modules():
        kind = getattr(getattr(m, "config", None), "model_type", None)
        if kind in SITES:
            return kind
        if kind is not None:
            raise ValueError(f"no insertion points known for model_type {kind!r}: add a Sites entry ({sorted(SITES)})")
    raise ValueError(f"{type(model).__name__} is neither a labkit TinyLM nor a known Hugging Face causal LM")


def placement_targets(sites: Sites, family: str, placement: str) -> list[str]:
    """The target regexes of ``family`` at ``placement``: series/parallel wrap whole sub-layers (after / beside
    them), LoRA goes on every linear layer of the chosen sub-layers. Prefix tuning has no placement (all layers)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}: choose one of {PLACEMENTS}")
    if family in ("series", "parallel"):
        parts = {"attention": [sites.attention], "mlp": [sites.mlp]}
    elif family == "lora":
        parts = {"attention": [sites.attention_linears], "mlp": [sites.mlp_linears]}
    else:
        raise ValueError(f"{family!r} takes no placement: choose one of ('series', 'parallel', 'lora')")
    return parts["attention"] + parts["mlp"] if placement == "both" else parts[placement]


# --- one PEFT module, attached ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PEFTConfig:
    """One PEFT module: its family, placement and size (``size`` = r of LoRA, bottleneck r, or n_v of prefix)."""

    family: str
    placement: str
    size: int
    alpha: float | None = None  # LoRA's α (scale α/r)
    init: str = "zero_up"  # bottleneck init: "zero_up" (U = 0, exactly f at step 0) or "bert" (N(0, 0.02²))
    prefix_std: float = 1.0  # prefix init P ~ N(0, std²)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown PEFT family {self.family!r}: choose one of {FAMILIES}")
        if self.size < 1:
            raise ValueError(f"size must be ≥ 1, got {self.size}")


def attach(model: nn.Module, cfg: PEFTConfig) -> list[nn.Module]:
    """Put ``cfg``'s modules into ``model`` (changed in place), freeze every other parameter, return the new modules.

    Works on a TinyLM and on a Hugging Face GPT-2 / LLaMA (bare or in ``HFCausalLM``); prefix tuning only on a
    TinyLM here (on a Hugging Face model it is PEFT's ``PrefixTuningConfig``, the same K = [P_k; K] through the
    key/value cache)."""
    if cfg.family == "prefix":
        return [add_prefix(model, cfg.size, init_std=cfg.prefix_std)]
    targets = placement_targets(SITES[architecture_of(model)], cfg.family, cfg.placement)
    if cfg.family == "lora":
        # y = W x + (α/r)·B A x on every chosen linear layer
        return inject_adapters(model, "lora", targets, r=cfg.size, alpha=cfg.alpha)
    # series: h' = h + U tanh(D h) after the sub-layer; parallel: h' = f(x) + U tanh(D x) beside it
    return inject_adapters(model, cfg.family, targets, r=cfg.size, activation="tanh", init=cfg.init)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimiser updates (``requires_grad``): the PEFT modules only, or all for full FT."""
    return [p for p in model.parameters() if p.requires_grad]


def formula_parameters(
    cfg: PEFTConfig, d: int, n_layers: int, d_ff: int | None = None, d_qkv: int | None = None
) -> int:
    """Trainable parameters of ``cfg`` on a TinyLM-shaped model (no adapter biases), by formula:

    series / parallel:  2·d·r per sub-layer (D (r, d), U (d, r))
    LoRA:               r·(d_in + d_out) per linear layer: qkv (d → 3d), out (d → d), MLP (d → 4d → d)
    prefix:             2·n_v·d per layer (P_k, P_v)
    """
    d_ff = 4 * d if d_ff is None else d_ff
    d_qkv = 3 * d if d_qkv is None else d_qkv
    r = cfg.size
    if cfg.family == "prefix":
        return n_layers * 2 * cfg.size * d
    attention, mlp = cfg.placement in ("attention", "both"), cfg.placement in ("mlp", "both")
    if cfg.family in ("series", "parallel"):
        return n_layers * (attention + mlp) * 2 * d * r
    per_layer = attention * (r * (d + d_qkv) + r * (d + d)) + mlp * (r * (d + d_ff) + r * (d_ff + d))
    return n_layers * per_layer


# --- the loss: answer tokens only (or the prompt too) -------------------------------------------------------------


def token_logprobs(model: nn.Module, tokens: Tensor) -> Tensor:
    """log π(s_{t+1} | s_≤t) for every next token of ``tokens (B, T)``: ``(B, T − 1)``."""
    logits = model(tokens[:, :-1])  # (B, T − 1, V)
    return logits.log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)


def scored_positions(prompts: Tensor, answer_mask: Tensor, pad: int, train_on_inputs: bool = False) -> Tensor:
    """Which next-token targets of [prompt; answer] are scored, ``(B, P + L − 1)``: the answer tokens up to and
    including their EOS (``answer_mask (B, L)``); with ``train_on_inputs`` also the prompt's tokens after the left
    padding (each predicted from the one before it; the prompt's first token has no context and is not scored)."""
    B, P = prompts.shape
    if train_on_inputs:
        started = (prompts != pad).long().cumsum(1) > 0  # (B, P): True from the prompt's first real token on
        prompt_part = started[:, 1:] & started[:, :-1]  # target t+1 scored when token t is real too
    else:
        prompt_part = torch.zeros(B, P - 1, dtype=torch.bool, device=prompts.device)
    return torch.cat([prompt_part, answer_mask.bool()], dim=1)


def sequence_loss(
    model: nn.Module, prompts: Tensor, answers: Tensor, answer_mask: Tensor, pad: int, train_on_inputs: bool = False
) -> Tensor:
    """Causal-LM cross-entropy, the token mean per example then the mean over the batch. A scalar.

    ``prompts (B, P)`` left-padded with ``pad``, ``answers (B, L)`` right-padded, ``answer_mask (B, L)``."""
    tokens = torch.cat([prompts, answers], dim=1)  # (B, P + L)
    # m_bt: the targets scored (answer only, or the prompt too)                               (B, P + L − 1)
    m = scored_positions(prompts, answer_mask, pad, train_on_inputs).to(torch.float32)
    # −log π(s_{t+1} | s_≤t) at each target                                                  (B, P + L − 1)
    nll = -token_logprobs(model, tokens)
    # L = (1/B) Σ_b [Σ_t m_bt · nll_bt / Σ_t m_bt]
    return ((nll * m).sum(1) / m.sum(1).clamp_min(1)).mean()


# --- the fine-tuning loop ----------------------------------------------------------------------------------------


def lr_factor(step: int, n_steps: int, n_warmup: int) -> float:
    """The Trainer's linear schedule: lr_t = lr · t/w for t < w, then lr · (T − t)/(T − w) (step t from 0)."""
    if step < n_warmup:
        return (step + 1) / n_warmup
    return max(0.0, (n_steps - step) / max(1, n_steps - n_warmup))


def finetune(
    model: nn.Module,
    train: Task,
    *,
    n_steps: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    pad: int,
    warmup_frac: float = 0.05,
    weight_decay: float = 0.0,
    train_on_inputs: bool = False,
    series: str = "fine-tuning",
    eval_steps: Iterable[int] = (),
    on_eval: Callable[[int], None] | None = None,
) -> list[float]:
    """Fine-tune the trainable parameters of ``model`` (the PEFT modules; every weight for full FT) on ``train``
    by AdamW with the linear warm-up/decay schedule; the frozen base never changes. Returns the loss per step.

    ``on_eval(step)`` runs at each step in ``eval_steps`` (0 = before training). A NaN/inf loss, or a trainable
    weight that is NaN/inf or beyond 1e6, raises ``DivergenceError`` naming ``series`` and the step."""
    params = trainable(model)
    if not params:
        raise ValueError(f"{series}: the model has no trainable parameter (attach a PEFT module first)")
    if batch_size > len(train):
        raise ValueError(f"batch_size={batch_size} is larger than the {len(train)} training examples")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    n_warmup = round(warmup_frac * n_steps)
    batches, wanted, losses = endless_minibatches(len(train), batch_size, generator), set(eval_steps), []
    for step in range(n_steps + 1):
        if step in wanted and on_eval is not None:
            on_eval(step)
        if step == n_steps:
            break
        idx = next(batches).to(train.prompts.device)
        model.train()
        loss = sequence_loss(model, train.prompts[idx], train.answers[idx], train.mask[idx], pad, train_on_inputs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(step, n_steps, n_warmup)
        opt.step()
        losses.append(check_finite(loss, step + 1, series))
        check_weights(params, step + 1, series)
    model.eval()
    return losses

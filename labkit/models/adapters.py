"""Parameter-efficient adapters, written out for teaching: LoRA, DoRA, series and parallel bottleneck adapters,
and prefix tuning.

A frozen linear map ``y = W x + b`` with ``W (d_out, d_in)`` gets a trainable low-rank addition:

    LoRA (Hu et al. 2021):   y = W x + b + (α/r) · B A · Dropout(x),   A (r, d_in) random, B (d_out, r) zeros
    DoRA (Liu et al. 2024):  y = m ⊙ (W + (α/r) B A) x / ‖W + (α/r) B A‖_row + b,   m (d_out,) = ‖W‖_row at init

(PEFT's conventions: Kaiming-uniform A, zero B, DoRA's row norm detached from the graph, dropout on the adapter's
input only.) ``alpha=None`` means no α/r factor (scale 1), as ALLoRA uses it. :func:`inject_lora` swaps named
linear layers of any model for :class:`LoRALinear` wrappers and freezes everything else. A linear layer is an
``nn.Linear`` or a Hugging Face ``Conv1D`` (GPT-2's; it stores Wᵀ, shape ``(d_in, d_out)``, which
:func:`linear_weight` turns back into W: PEFT's ``fan_in_fan_out=True``).

A bottleneck adapter (Houlsby et al. 2019; He et al. 2021; the LLM-Adapters paper, arXiv 2304.01933) is a small
two-layer branch z ↦ s · U σ(D z), D (r, d) down, U (d, r) up, wrapped around a frozen module f:

    series   (after f):  y = f(x),   y' = y + s · U σ(D y)       (the "output adapter" after the MLP's last linear)
    parallel (beside f): y = f(x) + s · U σ(D x)

σ = tanh and s = 1 as in the official LLM-Adapters code, no biases there (``bias=True`` adds them, as the
``adapters`` package has them), dropout on the branch's input. Init ``"zero_up"``: D Kaiming-uniform, U = 0, so
the adapter is exactly the identity at step 0; ``"bert"``: D, U ~ N(0, 0.02²), only near the identity.
:func:`inject_adapters` puts any of LoRA, DoRA, series, parallel on named modules.

Prefix tuning (Li & Liang 2021; P-tuning v2): every attention layer gets n_v learned key and value vectors that
every query attends to, K = [P_k; K], V = [P_v; V] (:func:`add_prefix`, for :class:`~labkit.models.tiny_lm.TinyLM`;
for a Hugging Face model use PEFT's ``PrefixTuningConfig``, which does the same through the key/value cache).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterable

import torch
from torch import nn

from labkit.models.tiny_lm import CausalSelfAttention

# --------------------------------------------------------------------------------------------- linear layers


def is_conv1d(module: nn.Module) -> bool:
    """True for ``transformers.pytorch_utils.Conv1D`` (GPT-2's linear layer), without importing transformers: a
    model built from it has imported it already."""
    hf = sys.modules.get("transformers.pytorch_utils")
    return hf is not None and isinstance(module, hf.Conv1D)


def is_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` or a Hugging Face ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def linear_weight(module: nn.Module) -> torch.Tensor:
    """W with shape ``(d_out, d_in)``: ``nn.Linear.weight`` as it is, ``Conv1D.weight`` (stored Wᵀ) transposed."""
    return module.weight.T if is_conv1d(module) else module.weight


def io_features(module: nn.Module) -> tuple[int, int]:
    """``(d_in, d_out)`` of a linear layer; of any other module, d_in of its first linear layer and d_out of its
    last (in registration order: an MLP's or an attention block's input and output widths)."""
    linears = [m for m in module.modules() if is_linear(m)]
    if not linears:
        raise ValueError(f"{type(module).__name__} holds no linear layer: pass d_in and d_out explicitly")
    first, last = linear_weight(linears[0]), linear_weight(linears[-1])
    return first.shape[1], last.shape[0]


# --------------------------------------------------------------------------------------------- LoRA and DoRA


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update ``(α/r)·B A`` (``use_dora=True``: DoRA).

    ``base`` is an ``nn.Linear`` or a Hugging Face ``Conv1D`` (its transposed weight is handled).

    >>> layer = LoRALinear(nn.Linear(6, 4), r=2, alpha=4)
    >>> layer(torch.ones(3, 6)).shape, layer.lora_A.shape, layer.lora_B.shape
    (torch.Size([3, 4]), torch.Size([2, 6]), torch.Size([4, 2]))
    """

    def __init__(
        self,
        base: nn.Module,
        r: int,
        alpha: float | None = None,
        dropout: float = 0.0,
        use_dora: bool = False,
    ):
        super().__init__()
        if not is_linear(base):
            raise TypeError(f"LoRALinear wraps an nn.Linear (or a transformers Conv1D), got {type(base).__name__}")
        if r < 1:
            raise ValueError(f"rank r must be ≥ 1, got {r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        weight = linear_weight(base)
        d_out, d_in = weight.shape
        self.r = r
        # the fixed scale s = α/r (1 when alpha is None: no scale factor)
        self.scaling = 1.0 if alpha is None else alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        factory = {"device": weight.device, "dtype": weight.dtype}
        # A (r, d_in): Kaiming-uniform as nn.Linear's default; B (d_out, r): zeros, so B A = 0 at the start
        self.lora_A = nn.Parameter(torch.empty(r, d_in, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(d_out, r, **factory))
        self.use_dora = use_dora
        if use_dora:
            # m (d_out,) = ‖W‖ per output row, so that W' = W at the start
            self.magnitude = nn.Parameter(weight.detach().norm(dim=1).clone())

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (α/r) · B A, shape ``(d_out, d_in)``."""
        return self.scaling * self.lora_B @ self.lora_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # W x + b   (..., d_out)
        x_d = self.dropout(x)
        # (α/r) · B A x   (..., d_out)
        lora = self.scaling * (x_d @ self.lora_A.T) @ self.lora_B.T
        if not self.use_dora:
            return y + lora
        # DoRA: s = m / ‖W + ΔW‖_row (norm detached); y' = b + s ⊙ (W x + ΔW x) = y + (s − 1) W x + s ΔW x
        weight = linear_weight(self.base)  # (d_out, d_in)
        row_norm = (weight + self.delta_weight()).norm(dim=1).detach()
        s = self.magnitude / row_norm
        return y + (s - 1) * (x_d @ weight.T) + s * lora

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, dora={self.use_dora}"


def inject_lora(
    model: nn.Module,
    targets: str | Iterable[str],
    r: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    use_dora: bool = False,
) -> list[LoRALinear]:
    """Replace every linear layer (``nn.Linear`` or ``Conv1D``) whose qualified name matches ``targets`` (regexes,
    full match) with a :class:`LoRALinear`; freeze all other parameters. Returns the new layers in module order.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    >>> [type(m).__name__ for m in inject_lora(net, r"\\d+", r=2)]
    ['LoRALinear', 'LoRALinear']
    """
    patterns = _patterns(targets)
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = [name for name, module in model.named_modules() if is_linear(module) and _matches(name, patterns)]
    if not chosen:
        raise ValueError(f"no nn.Linear (or Conv1D) in the model matches {[p.pattern for p in patterns]}")
    return [
        _replace(model, name, lambda m: LoRALinear(m, r=r, alpha=alpha, dropout=dropout, use_dora=use_dora))
        for name in chosen
    ]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------- bottleneck adapters

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}
INITS = ("zero_up", "bert")


class Bottleneck(nn.Module):
    """The adapter branch z ↦ s · U σ(D · Dropout(z)): ``down`` holds D ``(r, d_in)``, ``up`` holds U ``(d_out, r)``.

    ``init="zero_up"``: D Kaiming-uniform (nn.Linear's default), U = 0, so the branch is exactly 0 at the start;
    ``init="bert"``: D, U ~ N(0, 0.02²) (the official LLM-Adapters default), biases zero.

    >>> branch = Bottleneck(6, 6, r=2)
    >>> branch(torch.ones(3, 6)).abs().max().item(), branch.down.weight.shape, branch.up.weight.shape
    (0.0, torch.Size([2, 6]), torch.Size([6, 2]))
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        r: int,
        scaling: float = 1.0,
        activation: str = "tanh",
        init: str = "zero_up",
        dropout: float = 0.0,
        bias: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if r < 1:
            raise ValueError(f"bottleneck size r must be ≥ 1, got {r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: choose one of {sorted(ACTIVATIONS)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}: choose one of {INITS}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.r, self.scaling, self.init = r, float(scaling), init
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.down = nn.Linear(d_in, r, bias=bias, device=device, dtype=dtype)  # D (r, d_in)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(r, d_out, bias=bias, device=device, dtype=dtype)  # U (d_out, r)
        with torch.no_grad():
            if init == "zero_up":
                # D keeps nn.Linear's Kaiming-uniform init; U = 0
                nn.init.zeros_(self.up.weight)
            else:
                nn.init.normal_(self.down.weight, std=0.02)
                nn.init.normal_(self.up.weight, std=0.02)
            for layer in (self.down, self.up):
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # s · U σ(D z)   (..., d_in) → (..., d_out)
        return self.scaling * self.up(self.act(self.down(self.dropout(z))))

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, init={self.init}"


class SeriesAdapter(nn.Module):
    """A frozen module followed by a bottleneck adapter: y = f(x), y' = y + s · U σ(D y).

    ``d`` (the width of y) defaults to the module's output width (:func:`io_features`). If f returns a tuple (a
    Hugging Face attention layer), the adapter acts on its first element.

    >>> layer = SeriesAdapter(nn.Linear(6, 4), r=2)
    >>> x = torch.randn(3, 6)
    >>> torch.equal(layer(x), layer.base(x))  # zero_up init: exactly f at the start
    True
    """

    def __init__(self, base: nn.Module, r: int, d: int | None = None, **branch):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        d = io_features(base)[1] if d is None else d
        self.adapter = Bottleneck(d, d, r, **branch, **_factory(base))

    def forward(self, *args, **kwargs):
        out = self.base(*args, **kwargs)
        y = out[0] if isinstance(out, tuple) else out
        # y' = y + s · U σ(D y)
        y = y + self.adapter(y)
        return (y, *out[1:]) if isinstance(out, tuple) else y


class ParallelAdapter(nn.Module):
    """A frozen module with a bottleneck adapter beside it: y = f(x) + s · U σ(D x).

    x is the module's first positional argument (or its ``hidden_states=`` keyword, as Hugging Face layers are
    called); ``d_in``/``d_out`` default to the module's widths (:func:`io_features`). A tuple output gets the
    branch added to its first element.

    >>> layer = ParallelAdapter(nn.Linear(6, 4), r=2)
    >>> x = torch.randn(3, 6)
    >>> torch.equal(layer(x), layer.base(x))  # zero_up init: exactly f at the start
    True
    """

    def __init__(self, base: nn.Module, r: int, d_in: int | None = None, d_out: int | None = None, **branch):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        if d_in is None or d_out is None:
            found_in, found_out = io_features(base)
            d_in, d_out = d_in or found_in, d_out or found_out
        self.adapter = Bottleneck(d_in, d_out, r, **branch, **_factory(base))

    def forward(self, *args, **kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        out = self.base(*args, **kwargs)
        y = out[0] if isinstance(out, tuple) else out
        # y = f(x) + s · U σ(D x)
        y = y + self.adapter(x)
        return (y, *out[1:]) if isinstance(out, tuple) else y


ADAPTER_KINDS = ("lora", "dora", "series", "parallel")


def inject_adapters(model: nn.Module, kind: str, targets: str | Iterable[str], **cfg) -> list[nn.Module]:
    """Put an adapter of ``kind`` on every module whose qualified name matches ``targets`` (regexes, full match);
    freeze every other parameter. Returns the new layers in module order.

    - ``"lora"`` / ``"dora"``: :func:`inject_lora` on the matching linear layers; ``cfg``: ``r``, ``alpha``,
      ``dropout``.
    - ``"series"`` / ``"parallel"``: :class:`SeriesAdapter` / :class:`ParallelAdapter` around any matching module
      (a linear layer, an MLP, an attention block); ``cfg``: ``r``, ``scaling``, ``activation``, ``init``,
      ``dropout``, ``bias`` and the widths (``d``; ``d_in``, ``d_out``) when they cannot be read off the module.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))
    >>> [type(m).__name__ for m in inject_adapters(net, "series", "2", r=2)], count_parameters(net)
    (['SeriesAdapter'], 16)
    """
    if kind in ("lora", "dora"):
        return inject_lora(model, targets, use_dora=kind == "dora", **cfg)
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"unknown adapter kind {kind!r}: choose one of {ADAPTER_KINDS}")
    wrapper = SeriesAdapter if kind == "series" else ParallelAdapter
    patterns = _patterns(targets)
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = [name for name, _ in model.named_modules() if name and _matches(name, patterns)]
    if not chosen:
        raise ValueError(f"no module in the model matches {[p.pattern for p in patterns]}")
    nested = [(a, b) for a in chosen for b in chosen if b.startswith(a + ".")]
    if nested:
        raise ValueError(f"targets match nested modules {nested[0][0]!r} and {nested[0][1]!r}: match only one")
    return [_replace(model, name, lambda m: wrapper(m, **cfg)) for name in chosen]


# --------------------------------------------------------------------------------------------- prefix tuning


class LayerPrefix(nn.Module):
    """One attention layer's prefix: ``key`` and ``value`` ``(n_v, d_model)``, learned, the same for every sequence.

    Called with no argument it returns ``(key, value)``: the hook :class:`~labkit.models.tiny_lm.CausalSelfAttention`
    reads (it splits d_model into heads, so head h gets columns ``h·d_h : (h+1)·d_h``).
    """

    def __init__(self, n_virtual: int, d_model: int, init_std: float = 1.0, device=None, dtype=None):
        super().__init__()
        self.key = nn.Parameter(init_std * torch.randn(n_virtual, d_model, device=device, dtype=dtype))
        self.value = nn.Parameter(init_std * torch.randn(n_virtual, d_model, device=device, dtype=dtype))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.key, self.value


class PrefixTuning(nn.Module):
    """The prefixes of all attention layers of a model (what :func:`add_prefix` returns); ``layers[i]`` is also
    registered as the ``prefix`` of the model's i-th attention layer, so the model's own ``parameters()`` hold them."""

    def __init__(self, layers: Iterable[LayerPrefix]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    @property
    def n_virtual(self) -> int:
        return self.layers[0].key.shape[0]


def add_prefix(model: nn.Module, n_virtual: int, init_std: float = 1.0) -> PrefixTuning:
    """Prefix tuning on every :class:`~labkit.models.tiny_lm.CausalSelfAttention` of ``model`` (a TinyLM): n_v
    learned key and value vectors per layer, P_k, P_v ~ N(0, init_std²) (PEFT's embedding init for std 1), that
    every head of every position attends to. Freezes all other parameters; 2 · n_layers · n_v · d_model trainable.

    >>> from labkit.models.tiny_lm import TinyLM
    >>> lm = TinyLM(vocab_size=12, max_len=10, d_model=16, n_layers=2)
    >>> prefix = add_prefix(lm, n_virtual=3)
    >>> lm(torch.zeros(2, 10, dtype=torch.long)).shape, count_parameters(lm), count_parameters(prefix)
    (torch.Size([2, 10, 12]), 192, 192)
    """
    if n_virtual < 1:
        raise ValueError(f"n_virtual must be ≥ 1, got {n_virtual}")
    attns = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    if not attns:
        raise TypeError(f"{type(model).__name__} has no labkit CausalSelfAttention: use PEFT's PrefixTuningConfig")
    if any(a.prefix is not None for a in attns):
        raise ValueError("the model already has a prefix")
    for p in model.parameters():
        p.requires_grad_(False)
    layers = []
    for attn in attns:
        w = attn.qkv.weight
        attn.prefix = LayerPrefix(n_virtual, w.shape[1], init_std, device=w.device, dtype=w.dtype)
        layers.append(attn.prefix)
    return PrefixTuning(layers)


# --------------------------------------------------------------------------------------------- helpers


def _patterns(targets: str | Iterable[str]) -> list[re.Pattern]:
    return [re.compile(t) for t in ([targets] if isinstance(targets, str) else targets)]


def _matches(name: str, patterns: list[re.Pattern]) -> bool:
    return any(p.fullmatch(name) for p in patterns)


def _replace(model: nn.Module, name: str, make: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Swap the submodule at ``name`` for ``make(submodule)``; return the new module."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    new = make(getattr(parent, child))
    setattr(parent, child, new)
    return new


def _factory(module: nn.Module) -> dict:
    """The device and dtype of a module's first parameter (an adapter is built where its base lives)."""
    p = next(module.parameters(), None)
    return {} if p is None else {"device": p.device, "dtype": p.dtype}

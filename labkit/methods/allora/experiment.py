"""ALLoRA's experiment: typed knobs, the teacher–student toy, the LoRA / DoRA / ALLoRA arms, the claims, ``run``.

Per seed: a frozen "pre-trained" tanh MLP (32 → width → width → 8, weights N(0, 1/d_in)); the fine-tuning target is
the same network with a rank-``shift_rank`` perturbation added to every layer. Train, validation and test inputs
are Gaussian; train and validation targets carry output noise, test targets are clean. Every arm puts an adapter of
rank r on all three layers, starts from the same A (per seed) and sees the same mini-batches:

- **LoRA** (α/r scale, dropout p) at each learning rate of the grid ``lr/f, lr, lr·f``;
- **LoRA, no dropout** and **DoRA** (α/r, dropout p) at ``lr``;
- **ALLoRA** (no scale, no dropout, step rescaled by c(θ)) at each learning rate of the same grid.

The best learning rate of a grid is chosen per seed on the *validation* MSE; the test MSE is only reported.

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from labkit.core import (
    Arm,
    ClaimCheck,
    History,
    Outcome,
    RunContext,
    knob,
    method_run,
    params_of,
    torch_threads,
)
from labkit.models.adapters import LoRALinear, inject_lora

from .figures import make_figures
from .method import GROUPINGS, finetune, inject_allora

MAIN_METRIC = "test_mse"
#: input and output sizes of the teacher–student MLP (the card's 32 → 64 → 64 → 8)
D_IN, D_OUT = 32, 8
#: the adapters go on every nn.Linear of the MLP (``nn.Sequential`` names them "0", "2", "4")
TARGETS = r"\d+"

# ---- the claims' margins, fixed before any run (the card's "claim check"; ratios are per seed, method / baseline)
#: the early step (escape from zero) and the short budget at which the claims read the test MSE
EARLY_STEP, SHORT_STEP = 10, 50
#: 1. faster escape: ALLoRA's test MSE at step 10 ≤ 0.85 × LoRA's (same lr)
ESCAPE_RATIO = 0.85
#: 2. short budget (headline): at step 50, ALLoRA ≤ 0.85 × LoRA (same lr) ...
SHORT_RATIO = 0.85
#: ... and ≤ DoRA (same lr)
DORA_RATIO = 1.0
#: 3. tuning fairness: each method at its best lr of the grid (chosen on validation), ALLoRA ≤ 0.95 × LoRA
TUNED_RATIO = 0.95
#: printed precision of the claims (ratios, MSEs, norms): at quick, the per-seed values, intervals and numbers moved by
#: at most 4e-6 between torch's default and AVX2 CPU kernels and not at all between 1 and 2 threads; 3 decimals
DECIMALS = 3


@dataclass(frozen=True)
class Knobs:
    eta: float = knob(4.0, low=0.05, high=100.0, log=True, help="ALLoRA η: c(θ) = 1/sqrt(‖θ‖² + 1/η²), = η at θ = 0")
    lr: float = knob(3e-3, low=1e-5, high=0.1, log=True, help="Adam learning rate of the matched-lr arms")
    rank: int = knob(4, low=1, high=32, help="adapter rank r (every arm)")
    dropout: float = knob(0.05, low=0.0, high=0.9, help="dropout p on the adapter's input (LoRA and DoRA)")
    n_steps: int = knob(
        100, low=SHORT_STEP, high=100_000, help=f"Adam steps (the claims read steps {EARLY_STEP} and {SHORT_STEP})"
    )
    alpha: float = knob(8.0, low=0.1, high=1000.0, log=True, main=False, help="LoRA/DoRA α (scale α/r); none in ALLoRA")
    grouping: str = knob("row", choices=GROUPINGS, help="θ of c(θ): one row of A or B (inferred), or the whole matrix")
    lr_grid_factor: float = knob(
        3.0, low=1.5, high=10.0, main=False, help="the lr grid of LoRA and ALLoRA is lr/f, lr, lr·f"
    )
    n_seeds: int = knob(
        5, standard=20, full=100, low=1, high=1000, main=False, help="independent problems (new teacher, data, A)"
    )
    width: int = knob(64, full=256, low=4, high=4096, main=False, help="hidden width of the 3-layer tanh MLP")
    shift_rank: int = knob(2, low=1, high=D_OUT, main=False, help="rank of the perturbation added to every layer")
    shift_scale: float = knob(0.5, low=0.0, high=10.0, main=False, help="ΔW = scale · U Vᵀ/√d_in per layer")
    noise: float = knob(0.05, low=0.0, high=10.0, main=False, help="output noise std of train and validation targets")
    n_train: int = knob(256, low=8, high=1_000_000, main=False, help="training points")
    n_val: int = knob(256, low=8, high=1_000_000, main=False, help="validation points (choose the best lr)")
    n_test: int = knob(2000, standard=5000, low=8, high=1_000_000, main=False, help="test points (clean targets)")
    batch_size: int = knob(32, low=1, high=100_000, main=False, help="mini-batch size")
    log_every: int = knob(10, low=1, high=100_000, main=False, help="evaluate every this many steps (and at 10, 50)")

    def __post_init__(self):
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size={self.batch_size} is larger than n_train={self.n_train}")
        if self.shift_rank > self.width:
            raise ValueError(f"shift_rank={self.shift_rank} is larger than the hidden width={self.width}")


PARAMS = params_of(Knobs)


# --- the toy: a pre-trained MLP and a low-rank shift of it ---------------------------------------------------


def tanh_mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """``sizes[0] → … → sizes[-1]`` with tanh between the linear layers."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Problem:
    """One seed's task: the frozen pre-trained net and its train / validation / test data."""

    base: nn.Sequential
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor


def make_problem(seed: int, p: Knobs, device="cpu") -> Problem:
    """Teacher W_l ~ N(0, 1/d_in) per layer (zero biases); target W_l + s·U_l V_lᵀ/√d_in with U, V ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = (D_IN, p.width, p.width, D_OUT)
    base, target = tanh_mlp(sizes), tanh_mlp(sizes)
    with torch.no_grad():
        for lb, lt in zip(linears(base), linears(target)):
            d_out, d_in = lb.weight.shape
            w = torch.randn(d_out, d_in, generator=gen) / math.sqrt(d_in)
            u = torch.randn(d_out, p.shift_rank, generator=gen)
            v = torch.randn(d_in, p.shift_rank, generator=gen)
            lb.weight.copy_(w)
            lt.weight.copy_(w + p.shift_scale * u @ v.T / math.sqrt(d_in))
            lb.bias.zero_()
            lt.bias.zero_()
        x = torch.randn(p.n_train + p.n_val + p.n_test, D_IN, generator=gen)
        clean = target(x)
        noisy = clean + p.noise * torch.randn(clean.shape, generator=gen)
    for q in base.parameters():
        q.requires_grad_(False)
    a, b = p.n_train, p.n_train + p.n_val
    return Problem(
        base.to(device),
        *(t.to(device) for t in (x[:a], noisy[:a], x[a:b], noisy[a:b], x[b:], clean[b:])),
    )


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


# --- the arms -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSpec:
    """One trained variant: which adapter (``kind``: lora, dora, allora), its lr and dropout."""

    arm: Arm
    kind: str
    lr: float
    dropout: float


def lr_grid(lr: float, factor: float) -> tuple[float, float, float]:
    return (lr / factor, lr, lr * factor)


def make_arms(p: Knobs) -> list[ArmSpec]:
    """LoRA and ALLoRA on the lr grid (keys ``*_lo``, ``*``, ``*_hi``), LoRA without dropout and DoRA at ``lr``."""
    specs = []
    for suffix, lr in zip(("_lo", "", "_hi"), lr_grid(p.lr, p.lr_grid_factor)):
        specs.append(ArmSpec(Arm("lora" + suffix, f"LoRA lr={lr:.2g}"), "lora", lr, p.dropout))
        specs.append(ArmSpec(Arm("allora" + suffix, f"ALLoRA η={p.eta:g} lr={lr:.2g}"), "allora", lr, 0.0))
    specs.append(ArmSpec(Arm("lora_nodrop", f"LoRA no dropout lr={p.lr:.2g}"), "lora", p.lr, 0.0))
    specs.append(ArmSpec(Arm("dora", f"DoRA lr={p.lr:.2g}"), "dora", p.lr, p.dropout))
    return specs


def attach(model: nn.Module, spec: ArmSpec, p: Knobs) -> list[LoRALinear]:
    """Put the arm's adapters on every layer of ``model`` (which is changed in place)."""
    if spec.kind == "allora":
        return inject_allora(model, TARGETS, p.rank)
    return inject_lora(model, TARGETS, r=p.rank, alpha=p.alpha, dropout=spec.dropout, use_dora=spec.kind == "dora")


@dataclass(frozen=True)
class ArmOutcome:
    """One arm's curves: ``(seed, logged step)`` arrays (as nested tuples) at ``steps``."""

    spec: ArmSpec
    steps: tuple[int, ...]
    test_mse: tuple[tuple[float, ...], ...]
    val_mse: tuple[tuple[float, ...], ...]
    delta_norm: tuple[tuple[float, ...], ...]  # Σ_layers ‖ΔW‖_F, ΔW = what the adapter adds to W

    @property
    def arm(self) -> Arm:
        return self.spec.arm

    def at(self, metric: str, step: int) -> np.ndarray:
        """Per-seed values of ``metric`` at ``step`` (one of ``steps``)."""
        return np.asarray(getattr(self, metric), float)[:, self.steps.index(step)]


def log_schedule(n_steps: int, log_every: int) -> list[int]:
    """Every ``log_every`` steps, plus the claims' steps and the last one."""
    return sorted(set(range(0, n_steps + 1, log_every)) | {EARLY_STEP, SHORT_STEP, n_steps})


@torch.no_grad()
def evaluate(model: nn.Module, layers, problem: Problem) -> dict[str, float]:
    """Test and validation MSE (eval mode: no dropout), Σ‖ΔW‖_F, and ‖A‖_F, ‖B‖_F per layer."""
    model.eval()
    out = {
        "test_mse": F.mse_loss(model(problem.x_test), problem.y_test).item(),
        "val_mse": F.mse_loss(model(problem.x_val), problem.y_val).item(),
        "delta_norm": float(sum(layer.delta_weight().norm() for layer in layers)),
    }
    for i, layer in enumerate(layers):
        out[f"norm_A_{i}"] = layer.lora_A.norm().item()
        out[f"norm_B_{i}"] = layer.lora_B.norm().item()
    return out


def train_arm(ctx: RunContext, spec: ArmSpec, problem: Problem, seed: int, p: Knobs, lr: float | None = None):
    """Fine-tune one arm on one seed's problem, logging every evaluation to ``ctx.history``. Returns the
    ``{test_mse, val_mse, delta_norm}`` lists at the logged steps. ``lr`` overrides the arm's (tests only)."""
    model = copy.deepcopy(problem.base)
    torch.manual_seed(10_000 + seed)  # the same A for every arm of a seed (and the dropout masks' stream)
    layers = attach(model, spec, p)
    series = spec.arm.label
    curves = {"test_mse": [], "val_mse": [], "delta_norm": []}

    def on_log(step: int) -> None:
        ctx.check_weights(layers, step, series)
        values = evaluate(model, layers, problem)
        for metric, value in values.items():
            ctx.history.log(step, series, metric, value, seed=seed)
        for metric in curves:
            curves[metric].append(values[metric])

    finetune(
        model,
        layers,
        problem.x_train,
        problem.y_train,
        n_steps=p.n_steps,
        lr=spec.lr if lr is None else lr,
        batch_size=p.batch_size,
        generator=torch.Generator().manual_seed(20_000 + seed),  # the same mini-batches for every arm
        eta=p.eta if spec.kind == "allora" else None,
        grouping=p.grouping,
        log_steps=log_schedule(p.n_steps, p.log_every),
        on_step=lambda step, loss: ctx.check(loss, step, series),
        on_log=on_log,
    )
    ctx.check_weights(layers, p.n_steps, series)
    return curves


# --- choosing the best learning rate (validation only) ---------------------------------------------------------


def select_by_validation(val: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, the grid point with the lowest validation MSE: ``val, test (G, S)`` → (its test MSE ``(S,)``,
    its index ``(S,)``). The test MSE never takes part in the choice."""
    val, test = np.asarray(val, float), np.asarray(test, float)
    pick = np.nanargmin(np.where(np.isfinite(val), val, np.inf), axis=0)
    return test[pick, np.arange(test.shape[1])], pick


# --- the claims (pure functions of per-seed numbers) -------------------------------------------------------------


def _ratio_claim(claim, quantity, method, baseline, margin, labels, headline=False, decimals=DECIMALS) -> ClaimCheck:
    """``values`` = method / baseline per seed; the claim is mean ratio ≤ ``margin``."""
    method, baseline = np.asarray(method, float), np.asarray(baseline, float)
    ratio = method / baseline
    bad = not np.isfinite(ratio).all()
    return ClaimCheck(
        claim=claim,
        quantity=quantity,
        values=ratio,
        margin=margin,
        higher_is_better=False,
        headline=headline,
        numbers={labels[0]: float(method.mean()), labels[1]: float(baseline.mean())},
        detail="a test MSE is not finite (an arm diverged): the verdict is inconclusive" if bad else "",
        decimals=decimals,
    )


def short_budget_claim(allora, lora, step: int = SHORT_STEP, margin: float = SHORT_RATIO) -> ClaimCheck:
    """Headline (the paper: ALLoRA beats LoRA when fine-tuning is short): at the same lr, ALLoRA's test MSE after
    ``step`` steps is at most ``margin`` × LoRA's."""
    return _ratio_claim(
        f"in a short budget ALLoRA reaches a lower test loss than LoRA at the same lr (≤ {margin:g}× LoRA's)",
        f"test MSE at step {step}, ALLoRA / LoRA, per seed",
        allora,
        lora,
        margin,
        ("ALLoRA MSE", "LoRA MSE"),
        headline=True,
    )


def escape_claim(allora, lora, step: int = EARLY_STEP, margin: float = ESCAPE_RATIO) -> ClaimCheck:
    """Supporting (flaw 2, B = 0 is slow to leave): after ``step`` steps ALLoRA is already ≤ ``margin`` × LoRA."""
    return _ratio_claim(
        f"ALLoRA leaves the zero start faster than LoRA (test MSE ≤ {margin:g}× LoRA's after {step} steps)",
        f"test MSE at step {step}, ALLoRA / LoRA, per seed",
        allora,
        lora,
        margin,
        ("ALLoRA MSE", "LoRA MSE"),
    )


def dora_claim(allora, dora, step: int = SHORT_STEP, margin: float = DORA_RATIO) -> ClaimCheck:
    """Supporting (the paper also beats DoRA): at the same lr and step, ALLoRA ≤ DoRA."""
    return _ratio_claim(
        "ALLoRA reaches a test loss at most DoRA's at the same lr",
        f"test MSE at step {step}, ALLoRA / DoRA, per seed",
        allora,
        dora,
        margin,
        ("ALLoRA MSE", "DoRA MSE"),
    )


def tuned_claim(allora_best, lora_best, margin: float = TUNED_RATIO) -> ClaimCheck:
    """Supporting (the card's fairness check): each at its best lr of the grid, chosen per seed on validation,
    ALLoRA's final test MSE ≤ ``margin`` × LoRA's."""
    return _ratio_claim(
        f"ALLoRA at its best lr beats LoRA at its best lr (≤ {margin:g}×; lr chosen on validation)",
        "final test MSE at the validation-best lr of the grid, ALLoRA / LoRA, per seed",
        allora_best,
        lora_best,
        margin,
        ("ALLoRA best MSE", "LoRA best MSE"),
    )


def escape_norm_claim(allora_norm, lora_norm, decimals: int = DECIMALS) -> ClaimCheck:
    """Supporting (the card's claim 4): after the budget, the adapters' total update Σ‖ΔW‖_F is larger for ALLoRA
    than for LoRA at the same lr (ΔW includes LoRA's α/r: what the model really adds to W)."""
    a, b = np.asarray(allora_norm, float), np.asarray(lora_norm, float)
    values = a - b
    return ClaimCheck(
        claim="ALLoRA's adapters move further from zero than LoRA's (larger Σ_layers ‖ΔW‖_F)",
        quantity="Σ_layers ‖ΔW‖_F at the last step, ALLoRA − LoRA, per seed",
        values=values,
        margin=0.0,
        numbers={"ALLoRA Σ‖ΔW‖": float(a.mean()), "LoRA Σ‖ΔW‖": float(b.mean())},
        detail="" if np.isfinite(values).all() else "a norm is not finite: the verdict is inconclusive",
        decimals=decimals,
    )


def probe_lrs(p: Knobs, lrs, seeds, device="cpu") -> dict[tuple[str, float], tuple[np.ndarray, np.ndarray]]:
    """LoRA and ALLoRA (the knobs' settings) at other learning rates: ``{(kind, lr): (val MSE (S,), test MSE (S,))}``
    at the last step, on the same problems as :func:`run` (the notebook uses it to widen the lr grid). One CPU
    thread, as ``run`` at quick: these tensors are tiny."""
    ctx = RunContext(p, "probe", seeds[0], torch.device(device), History(), False)
    out = {}
    with torch_threads(1):
        for kind in ("lora", "allora"):
            for lr in lrs:
                spec = ArmSpec(Arm(kind, f"{kind} lr={lr:.2g}"), kind, lr, p.dropout if kind == "lora" else 0.0)
                runs = [train_arm(ctx, spec, make_problem(seed, p, device), seed, p) for seed in seeds]
                val, test = (np.array([r[m][-1] for r in runs]) for m in ("val_mse", "test_mse"))
                out[kind, lr] = (val, test)
    return out


# --- run ------------------------------------------------------------------------------------------------------------


def final_metrics(outcomes: dict[str, ArmOutcome], n_steps: int, lora_best, allora_best) -> dict[str, float]:
    """Means over seeds: test MSE of every arm at steps 10, 50 and the last, and the tuned numbers."""
    out = {"test_mse_zero_shot": float(outcomes["lora"].at("test_mse", 0).mean())}
    for key, o in outcomes.items():
        out[f"test_mse_{key}_step{EARLY_STEP}"] = float(o.at("test_mse", EARLY_STEP).mean())
        out[f"test_mse_{key}_step{SHORT_STEP}"] = float(o.at("test_mse", SHORT_STEP).mean())
        out[f"test_mse_{key}"] = float(o.at("test_mse", n_steps).mean())
        out[f"delta_norm_{key}"] = float(o.at("delta_norm", n_steps).mean())
    out["test_mse_lora_best"] = float(np.mean(lora_best))
    out["test_mse_allora_best"] = float(np.mean(allora_best))
    return out


@method_run(Knobs, figures=make_figures)
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    specs = make_arms(p)
    curves = {s.arm.key: [] for s in specs}
    bar = ctx.bar(len(seeds) * len(specs), f"{len(specs)} arms × {len(seeds)} seeds")
    for seed in seeds:
        problem = make_problem(seed, p, ctx.device)
        for spec in specs:
            curves[spec.arm.key].append(train_arm(ctx, spec, problem, seed, p))
            bar.update(1)
    bar.close()
    steps = tuple(log_schedule(p.n_steps, p.log_every))
    outcomes = {
        s.arm.key: ArmOutcome(
            s, steps, *(tuple(tuple(c[m]) for c in curves[s.arm.key]) for m in ("test_mse", "val_mse", "delta_norm"))
        )
        for s in specs
    }
    grid = {}
    for method in ("lora", "allora"):
        keys = [method + suffix for suffix in ("_lo", "", "_hi")]
        val = np.stack([outcomes[k].at("val_mse", p.n_steps) for k in keys])
        test = np.stack([outcomes[k].at("test_mse", p.n_steps) for k in keys])
        best, pick = select_by_validation(val, test)
        grid[method] = (best, tuple(lr_grid(p.lr, p.lr_grid_factor)[i] for i in pick))
    lora, allora = outcomes["lora"], outcomes["allora"]
    claims = [
        short_budget_claim(allora.at("test_mse", SHORT_STEP), lora.at("test_mse", SHORT_STEP)),
        escape_claim(allora.at("test_mse", EARLY_STEP), lora.at("test_mse", EARLY_STEP)),
        dora_claim(allora.at("test_mse", SHORT_STEP), outcomes["dora"].at("test_mse", SHORT_STEP)),
        tuned_claim(grid["allora"][0], grid["lora"][0]),
        escape_norm_claim(allora.at("delta_norm", p.n_steps), lora.at("delta_norm", p.n_steps)),
    ]
    extras = {
        "arms": outcomes,
        "seeds": list(seeds),
        "best_lr": {m: grid[m][1] for m in grid},
        "eta": p.eta,
        "n_layers": 3,
    }
    metrics = final_metrics(outcomes, p.n_steps, grid["lora"][0], grid["allora"][0])
    return Outcome(metrics=metrics, claims=claims, extras=extras)

"""FRUGAL's experiment: the typed knobs, the Markov-chain language task, AdamW / GaLore-style / FRUGAL arms (+ a
sweep over ρ, projections, c and signSGD alone), the measured optimizer state, the claims, run().

Every arm trains the same tiny GPT (:class:`labkit.models.tiny_lm.TinyLM`, same initial weights, same mini-batches)
on sequences of a random second-order Markov chain (:mod:`labkit.data.markov`), one chain per seed; the score is
the next-token cross-entropy on held-out validation sequences of the same chain at the last step (no step or arm
is chosen on it). The optimizer itself and the training loop are in :mod:`.method`.

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, params_of
from labkit.data.markov import MarkovData, make_markov_data
from labkit.models.tiny_lm import TinyLM

from .figures import make_figures
from .method import (
    PROJECTIONS,
    STATE_FREE_RULES,
    Frugal,
    StateCount,
    frugal_param_groups,
    next_token_loss,
    state_bytes,
    state_formula,
    train_lm,
)


@dataclass(frozen=True)
class Knobs:
    rho: float = knob(
        0.25,
        low=0.0,
        high=1.0,
        help="density ρ: the share of each weight's rank (svd), of its columns, or of the blocks that get Adam",
    )
    update_gap: int = knob(50, low=1, high=100_000, help="T: steps between subspace refreshes (each resets Adam)")
    projection: str = knob("svd", choices=PROJECTIONS, help="how the state-full subspace is chosen")
    state_free: str = knob(
        "sign_sgd", choices=STATE_FREE_RULES, help="the state-free rule on the residual ('none' drops it: GaLore)"
    )
    state_free_scale: float = knob(1.0, low=0.0, high=10.0, help="c: the state-free step is c·η per coordinate")
    lr: float = knob(2e-3, low=1e-5, high=0.1, log=True, help="learning rate η of every arm")
    galore_lr_scale: float = knob(
        1.0,
        low=0.0,
        high=10.0,
        main=False,
        help="GaLore's scale on its projected update (1: the same step size as FRUGAL's Adam part; the paper's "
        "GaLore baseline used 0.25 with a 5× larger learning rate)",
    )
    n_steps: int = knob(
        300, standard=800, full=2000, low=1, high=1_000_000, main=False, help="training steps per arm and seed"
    )
    batch_size: int = knob(32, standard=32, full=64, low=1, high=4096, main=False, help="sequences per step")
    seq_len: int = knob(16, standard=24, full=64, low=3, high=1024, main=False, help="symbols per sequence")
    n_train: int = knob(3500, low=1, high=1_000_000, main=False, help="training sequences")
    n_val: int = knob(
        256, standard=500, full=500, low=1, high=100_000, main=False, help="validation sequences (the score)"
    )
    vocab_size: int = knob(32, low=2, high=512, main=False, help="symbols V of the Markov chain")
    logit_scale: float = knob(
        2.5, low=0.0, high=20.0, main=False, help="transition logits N(0,1)·scale: larger is more predictable"
    )
    d_model: int = knob(64, full=256, low=4, high=4096, main=False, help="width of the tiny GPT")
    n_layers: int = knob(1, standard=2, full=4, low=1, high=48, main=False, help="transformer blocks")
    n_heads: int = knob(4, full=8, low=1, high=64, main=False, help="attention heads (must divide d_model)")
    weight_decay: float = knob(0.0, low=0.0, high=1.0, main=False, help="decoupled weight decay λ (every arm)")
    n_seeds: int = knob(
        3, low=1, high=100, main=False, help="independent problems (seed, seed+1, …): new chain, data and init"
    )
    log_every: int = knob(50, standard=50, full=200, low=1, high=1_000_000, main=False, help="validate every … steps")
    sweep: bool = knob(
        False,
        standard=True,
        full=True,
        main=False,
        help="also train FRUGAL and GaLore at other ρ, blocks and columns, c = 0.1 and signSGD alone",
    )

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.log_every > self.n_steps:
            raise ValueError(f"log_every={self.log_every} is larger than n_steps={self.n_steps}")


PARAMS = params_of(Knobs)
MAIN_METRIC = "val_loss"

#: the card's margins, fixed before any run: FRUGAL(ρ) within 0.05 nats of AdamW, at least 0.3 below GaLore-style
NEAR_ADAMW = 0.05
BELOW_GALORE = 0.3
#: FRUGAL's measured state (projectors included) at most this share of AdamW's
STATE_SHARE = 0.40
#: densities of the sweep (the Pareto of loss against state); ρ = 0 keeps state only for the regular parameters
SWEEP_RHOS = (0.0, 0.5)
#: decimals of printed claim numbers (losses move by ~1e-4 across CPU kernels; see the notebook)
LOSS_DECIMALS = 2
SHARE_DECIMALS = 3


# --- arms and typed records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSpec:
    """One optimizer configuration: ``kind`` "adamw" (torch.optim.AdamW), "frugal" (FRUGAL and GaLore-style)
    or "sign_sgd" (signSGD on every parameter)."""

    key: str
    label: str
    kind: str
    rho: float = 1.0
    projection: str = "svd"
    state_free: str = "sign_sgd"
    c: float = 1.0
    reset: bool = True
    lr_scale: float = 1.0  # η' = η·lr_scale on the projectable weights (GaLore's "scale")
    main: bool = True
    curve: str = ""  # "frugal" / "galore": a point of that density curve (the Pareto figure); "" otherwise

    @property
    def arm(self) -> Arm:
        return Arm(self.key, self.label)


def make_arms(p: Knobs) -> list[ArmSpec]:
    """AdamW, GaLore-style (the same subspace, no residual, no reset) and FRUGAL at ``p``'s knobs; with ``p.sweep``
    also FRUGAL and GaLore at the other densities, the other projections, c = 0.1 and signSGD alone."""
    frugal = ArmSpec(
        "frugal", f"FRUGAL ρ={p.rho:g}", "frugal", p.rho, p.projection, p.state_free, p.state_free_scale, curve="frugal"
    )
    galore = ArmSpec(
        "galore",
        f"GaLore-style ρ={p.rho:g}",
        "frugal",
        p.rho,
        p.projection,
        "none",
        reset=False,
        lr_scale=p.galore_lr_scale,
    )
    arms = [ArmSpec("adamw", "AdamW", "adamw"), replace(galore, curve="galore"), frugal]
    if not p.sweep:
        return arms
    for rho in (r for r in SWEEP_RHOS if r != p.rho):
        arms.append(replace(frugal, key=f"frugal_rho{rho:g}", label=f"FRUGAL ρ={rho:g}", rho=rho, main=False))
        if rho > 0:
            label = f"GaLore-style ρ={rho:g}"
            arms.append(replace(arms[1], key=f"galore_rho{rho:g}", label=label, rho=rho, main=False))
    variant = replace(frugal, curve="")
    for proj in PROJECTIONS:
        if proj != p.projection:
            arms.append(replace(variant, key=f"frugal_{proj}", label=f"FRUGAL ρ={p.rho:g} {proj}", projection=proj))
    arms.append(replace(variant, key="frugal_c0.1", label=f"FRUGAL ρ={p.rho:g} c=0.1", c=0.1))
    arms.append(ArmSpec("sign_sgd", "signSGD (all parameters)", "sign_sgd", rho=0.0, main=False))
    return [replace(a, main=a.key in ("adamw", "galore", "frugal")) for a in arms]


@dataclass(frozen=True)
class ArmRun:
    """One arm's results, one value per seed (seed order of the run)."""

    spec: ArmSpec
    val_loss: tuple[float, ...]  # validation cross-entropy at the last step
    state_bytes: tuple[int, ...]  # measured: the largest sum of the optimizer's state tensors over training
    formula: StateCount  # the card's formula (AdamW: 2N floats)
    share: np.ndarray | None  # (seeds, n_steps) ‖down(G)‖/‖G‖ over the projectable weights, per step

    @property
    def arm(self) -> Arm:
        return self.spec.arm


# --- the toy setup ---------------------------------------------------------------------------------------------


def make_model(p: Knobs, seed: int, device) -> TinyLM:
    """The tiny GPT of the card: pre-LN blocks, learned positions, untied embeddings; the seed fixes its init."""
    torch.manual_seed(seed)
    return TinyLM(p.vocab_size, p.seq_len, d_model=p.d_model, n_layers=p.n_layers, n_heads=p.n_heads).to(device)


def make_optimizer(spec: ArmSpec, model: torch.nn.Module, p: Knobs, seed: int) -> torch.optim.Optimizer:
    """torch's AdamW for the baseline; :class:`Frugal` for FRUGAL and GaLore-style (``frugal_param_groups``: AdamW
    on the regular parameters) and for signSGD alone (every parameter a block that is never active)."""
    if spec.kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    if spec.kind == "sign_sgd":  # every parameter "projectable" with no active block: signSGD everywhere
        groups = [{"params": list(model.parameters()), "projectable": True}]
        projection, rho = "blocks", 0.0
    else:
        groups, projection, rho = frugal_param_groups(model), spec.projection, spec.rho
    return Frugal(
        groups,
        lr=p.lr,
        weight_decay=p.weight_decay,
        rho=rho,
        update_gap=p.update_gap,
        projection=projection,
        state_free=spec.state_free,
        state_free_scale=spec.c,
        reset=spec.reset,
        proj_lr_scale=spec.lr_scale,
        generator=torch.Generator().manual_seed(seed + 7919),
        track_share=True,
    )


def formula_of(spec: ArmSpec, model: torch.nn.Module) -> StateCount:
    """The card's state formula for this arm on ``model``."""
    if spec.kind == "sign_sgd":
        return StateCount(0)
    groups = frugal_param_groups(model)
    n_regular = sum(q.numel() for q in groups[0]["params"])
    shapes = [tuple(q.shape) for q in groups[1]["params"]]
    return state_formula(shapes, n_regular, None if spec.kind == "adamw" else spec.rho, spec.projection)


@torch.no_grad()
def val_loss(model: torch.nn.Module, val: torch.Tensor, batch: int = 1024) -> float:
    """Mean next-token cross-entropy over the validation sequences (eval mode, no grad)."""
    model.eval()
    total = sum(
        float(next_token_loss(model, val[i : i + batch])) * len(val[i : i + batch]) for i in range(0, len(val), batch)
    )
    model.train()
    return total / len(val)


def train_arm(
    spec: ArmSpec,
    data: MarkovData,
    model: torch.nn.Module,
    p: Knobs,
    *,
    check,
    check_weights,
    log=None,
    bar=None,
) -> tuple[float, int, np.ndarray | None]:
    """Train ``model`` in place with the arm's optimizer on ``data.train``; returns the final validation loss,
    the peak measured state bytes, and the per-step subspace share (None for AdamW and signSGD). ``check(loss,
    step, series)`` and ``check_weights(model, step, series)`` raise DivergenceError; ``log(step, metric, value)``
    writes history."""
    opt = make_optimizer(spec, model, p, data.seed)
    gen = torch.Generator().manual_seed(data.seed + 104729)  # the same mini-batches for every arm
    shares, recent, last = [], [], {"val": val_loss(model, data.val), "peak": 0}
    if log is not None:
        log(0, "val_loss", last["val"])

    def after_step(step: int, loss: torch.Tensor) -> None:
        recent.append(check(loss, step, spec.label))
        last["peak"] = max(last["peak"], state_bytes(opt))
        if spec.kind == "frugal":
            shares.append(opt.last_share)
        if step % p.log_every == 0 or step == p.n_steps:
            check_weights(model, step, spec.label)
            last["val"] = val_loss(model, data.val)
            if log is not None:
                log(step, "val_loss", last["val"])
                log(step, "train_loss", float(np.mean(recent)))
                if shares:
                    log(step, "subspace_share", float(shares[-1]))
            recent.clear()
        if bar is not None:
            bar.update(1)

    train_lm(model, opt, data.train, n_steps=p.n_steps, batch_size=p.batch_size, generator=gen, after_step=after_step)
    share = torch.stack(shares).cpu().numpy() if shares else None
    return last["val"], last["peak"], share


# --- the claims (pure functions of per-seed numbers) -------------------------------------------------------------


def headline_claim(frugal, adamw, galore, rho: float, decimals: int = LOSS_DECIMALS) -> ClaimCheck:
    """The paper's statement at equal state: FRUGAL(ρ) approaches AdamW AND beats the GaLore-style optimizer.
    Per seed, the worse of the two slacks: max(F − A − 0.05, F − G + 0.3) ≤ 0 means both bars are met."""
    f, a, g = (np.asarray(v, float) for v in (frugal, adamw, galore))
    slack = np.maximum(f - a - NEAR_ADAMW, f - g + BELOW_GALORE)
    return ClaimCheck(
        claim=f"At equal state memory FRUGAL (ρ={rho:g}) approaches AdamW and beats the GaLore-style optimizer",
        quantity=f"val loss, per seed max(FRUGAL − AdamW − {NEAR_ADAMW:g}, FRUGAL − GaLore + {BELOW_GALORE:g})",
        values=slack,
        margin=0.0,
        higher_is_better=False,
        headline=True,
        numbers={"FRUGAL": float(f.mean()), "AdamW": float(a.mean()), "GaLore-style": float(g.mean())},
        detail=_diverged(slack),
        decimals=decimals,
    )


def near_adamw_claim(frugal, adamw, rho: float, decimals: int = LOSS_DECIMALS) -> ClaimCheck:
    """Supporting: FRUGAL's validation loss is within 0.05 nats of AdamW's."""
    return ClaimCheck.paired(
        f"FRUGAL (ρ={rho:g}) is within {NEAR_ADAMW:g} nats of AdamW",
        "val loss, FRUGAL − AdamW, per seed",
        frugal,
        adamw,
        labels=("FRUGAL", "AdamW"),
        margin=NEAR_ADAMW,
        higher_is_better=False,
        detail=_diverged(np.asarray(frugal, float) - np.asarray(adamw, float)),
        decimals=decimals,
    )


def beats_galore_claim(frugal, galore, rho: float, decimals: int = LOSS_DECIMALS) -> ClaimCheck:
    """Supporting: at the same subspace, adding the state-free residual step lowers the loss by ≥ 0.3 nats."""
    return ClaimCheck.paired(
        f"FRUGAL (ρ={rho:g}) beats the GaLore-style optimizer (same subspace, no residual) by ≥ {BELOW_GALORE:g}",
        "val loss, FRUGAL − GaLore-style, per seed",
        frugal,
        galore,
        labels=("FRUGAL", "GaLore-style"),
        margin=-BELOW_GALORE,
        higher_is_better=False,
        detail=_diverged(np.asarray(frugal, float) - np.asarray(galore, float)),
        decimals=decimals,
    )


def state_claim(frugal_bytes, adamw_bytes, decimals: int = SHARE_DECIMALS) -> ClaimCheck:
    """Supporting: FRUGAL's measured optimizer state, projectors included, is at most 40% of AdamW's."""
    ratio = np.asarray(frugal_bytes, float) / np.asarray(adamw_bytes, float)
    return ClaimCheck(
        claim=f"FRUGAL's optimizer state (projectors included) is at most {STATE_SHARE:.0%} of AdamW's",
        quantity="measured state bytes, FRUGAL / AdamW, per seed",
        values=ratio,
        margin=STATE_SHARE,
        higher_is_better=False,
        numbers={"FRUGAL kB": float(np.mean(frugal_bytes)) / 1e3, "AdamW kB": float(np.mean(adamw_bytes)) / 1e3},
        detail=_diverged(ratio, "a state size is not finite"),
        decimals=decimals,
    )


def rho0_claim(frugal0, galore, rho: float, decimals: int = LOSS_DECIMALS) -> ClaimCheck:
    """Supporting (the paper): even ρ = 0 (state only for embeddings, norms and the output head) beats GaLore."""
    return ClaimCheck.paired(
        f"FRUGAL ρ=0 beats the GaLore-style optimizer at ρ={rho:g}",
        f"val loss, FRUGAL ρ=0 − GaLore-style ρ={rho:g}, per seed",
        frugal0,
        galore,
        labels=("FRUGAL ρ=0", "GaLore-style"),
        margin=0.0,
        higher_is_better=False,
        detail=_diverged(np.asarray(frugal0, float) - np.asarray(galore, float)),
        decimals=decimals,
    )


def _diverged(values, text: str = "a loss is not finite (an arm diverged): the verdict is inconclusive") -> str:
    return "" if np.isfinite(values).all() else text


# --- the experiment ----------------------------------------------------------------------------------------------


def final_metrics(runs: dict[str, ArmRun], floor: float) -> dict[str, float]:
    out = {"loss_floor": floor}
    for key, r in runs.items():
        out[f"val_loss_{key}"] = float(np.mean(r.val_loss))
        out[f"state_kb_{key}"] = float(np.mean(r.state_bytes)) / 1e3
    out["gap_frugal_minus_adamw"] = out["val_loss_frugal"] - out["val_loss_adamw"]
    out["gap_frugal_minus_galore"] = out["val_loss_frugal"] - out["val_loss_galore"]
    out["state_share_frugal"] = out["state_kb_frugal"] / out["state_kb_adamw"]
    return out


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    specs = make_arms(p)
    results = {s.key: {"val": [], "bytes": [], "share": []} for s in specs}
    formulas, floors = {}, []
    bar = ctx.bar(p.n_steps * len(specs) * len(seeds), f"{len(specs)} optimizers × {len(seeds)} seeds")
    for seed in seeds:
        data = make_markov_data(p.n_train, p.n_val, p.seq_len, p.vocab_size, p.logit_scale, seed).to(ctx.device)
        floors.append(data.floor)
        init = make_model(p, seed, ctx.device)
        for spec in specs:
            model = copy.deepcopy(init)

            def log(step, metric, value, spec=spec, seed=seed):
                ctx.history.log(step, spec.label, metric, value, seed=seed)

            val, peak, share = train_arm(
                spec, data, model, p, check=ctx.check, check_weights=ctx.check_weights, log=log, bar=bar
            )
            ctx.check_weights(model, p.n_steps, spec.label)
            results[spec.key]["val"].append(val)
            results[spec.key]["bytes"].append(peak)
            results[spec.key]["share"].append(share)
            formulas[spec.key] = formula_of(spec, model)
    bar.close()
    runs = {
        s.key: ArmRun(
            s,
            tuple(results[s.key]["val"]),
            tuple(results[s.key]["bytes"]),
            formulas[s.key],
            None if results[s.key]["share"][0] is None else np.stack(results[s.key]["share"]),
        )
        for s in specs
    }
    f, a, g = runs["frugal"], runs["adamw"], runs["galore"]
    claims = [
        headline_claim(f.val_loss, a.val_loss, g.val_loss, p.rho),
        near_adamw_claim(f.val_loss, a.val_loss, p.rho),
        beats_galore_claim(f.val_loss, g.val_loss, p.rho),
        state_claim(f.state_bytes, a.state_bytes),
    ]
    if "frugal_rho0" in runs and p.rho > 0:
        claims.append(rho0_claim(runs["frugal_rho0"].val_loss, g.val_loss, p.rho))
    extras = {"arms": list(runs.values()), "seeds": list(seeds), "floor": floors, "update_gap": p.update_gap}
    return Outcome(metrics=final_metrics(runs, float(np.mean(floors))), claims=claims, extras=extras)

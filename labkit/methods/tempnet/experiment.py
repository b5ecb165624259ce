"""TempNet's experiment: the typed knobs, the factual/creative next-token world, a frozen small LM, TempNet against
one global temperature (fixed at 1, learned, and the best of a grid), the per-input oracle τ*, the claims, run().

Per seed: a new split of the contexts (half for training, half held out), a new LM and new labels. The LM is trained
with plain cross-entropy on the training contexts and frozen; TempNet and the learned global τ are trained on its
logits for the same contexts with the DRO loss (:func:`.method.train_tempnet`); everything is measured on the
held-out contexts, with the expectation over the true next token taken exactly. The standard preset adds a ρ sweep
and the joint variant (the LM trained from scratch together with TempNet, GPT-2 style).

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, params_of
from labkit.data import next_token as nt

from .figures import make_figures
from .method import (
    FixedTemperature,
    GlobalTemperature,
    TempNet,
    dro_weights,
    kl_to_uniform,
    optimal_tau,
    robust_objective,
    train_tempnet,
)


@dataclass(frozen=True)
class Knobs:
    rho: float = knob(2.0, low=0.05, high=5.0, help="KL budget ρ: the worst case p keeps KL(p‖u) ≤ ρ (ρ < log m)")
    tau_min: float = knob(0.05, low=1e-3, high=10.0, log=True, help="TempNet's lowest temperature τ_min")
    tau_max: float = knob(5.0, low=1e-2, high=100.0, log=True, help="TempNet's highest temperature τ_max")
    hidden: int = knob(32, full=256, low=2, high=4096, log=True, help="TempNet width H (the code uses 256)")
    joint: bool = knob(
        False,
        standard=True,
        full=True,
        help="also train an LM from scratch jointly with TempNet (GPT-2 style) and compare it with plain CE",
    )
    dropout: float = knob(0.1, full=0.5, low=0.0, high=0.9, main=False, help="TempNet's dropout (the code: 0.5)")
    tempnet_lr: float = knob(
        3e-2, low=1e-6, high=1.0, log=True, main=False, help="Adam rate of TempNet and of the learned global τ"
    )
    n_steps: int = knob(400, standard=1000, full=3000, low=1, high=100_000, main=False, help="TempNet Adam steps")
    batch_size: int = knob(128, full=512, low=1, high=65_536, main=False, help="TempNet minibatch (context, token)")
    n_seeds: int = knob(
        3,
        standard=5,
        full=10,
        low=1,
        high=100,
        main=False,
        help="seeds seed, seed+1, …: each a new context split, LM, labels and TempNet",
    )
    vocab_size: int = knob(
        64, full=256, choices=(32, 64, 128, 256), main=False, help="vocabulary m (m² contexts, groups of 16)"
    )
    lm_steps: int = knob(
        300, standard=1000, full=3000, low=1, high=100_000, main=False, help="Adam steps of the LM (CE, then frozen)"
    )
    lm_lr: float = knob(3e-3, low=1e-6, high=1.0, log=True, main=False, help="Adam rate of the LM")
    lm_width: int = knob(
        64, full=256, low=4, high=4096, main=False, help="LM width: embeddings of width/2 for a and b → MLP"
    )
    lm_batch: int = knob(256, full=1024, low=1, high=65_536, main=False, help="LM minibatch")
    train_frac: float = knob(0.5, low=0.05, high=0.95, main=False, help="share of the contexts used for training")
    log_every: int = knob(20, standard=50, full=100, low=1, high=100_000, main=False, help="log every this many steps")
    rho_sweep: bool = knob(
        False, standard=True, full=True, main=False, help="also train TempNet at ρ ∈ {1, 2, 3} (final numbers only)"
    )
    joint_tau_min: float = knob(0.5, low=1e-3, high=10.0, log=True, main=False, help="joint variant: τ_min (GPT-2)")
    joint_tau_max: float = knob(5.0, low=1e-2, high=100.0, log=True, main=False, help="joint variant: τ_max")
    joint_lr_ratio: float = knob(
        100.0, low=1.0, high=1e6, log=True, main=False, help="joint variant: TempNet's rate = lm_lr / this"
    )

    def __post_init__(self):
        # checked by the one validator (CLI, notebook, widgets, sweep, run) before anything runs
        if self.tau_min >= self.tau_max:
            raise ValueError(f"tau_min={self.tau_min:g} must be below tau_max={self.tau_max:g}")
        if self.joint_tau_min >= self.joint_tau_max:
            raise ValueError(f"joint_tau_min={self.joint_tau_min:g} must be below joint_tau_max={self.joint_tau_max:g}")
        if self.rho >= math.log(self.vocab_size):
            raise ValueError(
                f"rho={self.rho:g} must be below log m = {math.log(self.vocab_size):.3f} "
                f"(vocab_size={self.vocab_size}): KL(p‖u) never exceeds log m, so the budget would not bind"
            )
        if self.rho_sweep and max(SWEEP_RHOS) >= math.log(self.vocab_size):
            raise ValueError(f"rho_sweep needs log m > {max(SWEEP_RHOS):g}: use vocab_size ≥ 32")


PARAMS = params_of(Knobs)
MAIN_METRIC = "robust_loss"

FIXED = Arm("fixed", "τ = 1 (fixed)")
LEARNED = Arm("global", "global τ (learned)")
GRID = Arm("grid", "global τ (best of grid)")
TEMPNET = Arm("tempnet", "TempNet")
ORACLE = Arm("oracle", "per-input τ* (oracle)")
ARMS = (FIXED, LEARNED, GRID, TEMPNET, ORACLE)
#: the joint variant's two language models
CE_LM = Arm("ce", "LM + CE (τ = 1)")
JOINT_LM = Arm("joint", "LM + TempNet (joint)")

#: the card's ρ sweep (standard preset)
SWEEP_RHOS = (1.0, 2.0, 3.0)
#: points of the log-spaced grid of single temperatures over [τ_min, τ_max] (the card: 60)
GRID_POINTS = 60
#: the card's margins (toy form of the paper's claims; the paper gives no number for this toy)
CLOSURE_MARGIN = 0.6  # share of the gap between the best global τ and the per-input oracle that TempNet closes
TRACKING_MARGIN = 0.7  # Spearman(τ_TempNet, τ*) on held-out contexts
#: decimals of the printed claim numbers, from the spread measured across CPU kernels (ATEN_CPU_CAPABILITY default,
#: avx2, avx512) at quick: the gap closure moves by up to 1.4e-4, the losses by 7e-5, Spearman by 5e-4, the median τ
#: by 1e-3 (one seed's TempNet after 400 steps); each claim prints a last digit at least 20× its largest spread
CLAIM_DECIMALS = 2
DIRECTION_DECIMALS = 1
JOINT_DECIMALS = 3
#: the seeds of the labels are offset from the split's so that they are independent streams
LABEL_SEED_OFFSET = 1000
#: contexts per kind in the DRO-weights figure
WEIGHTS_BATCH = 8


# --- the toy language model ----------------------------------------------------------------------------------


class NextTokenMLP(nn.Module):
    """Logits of the next token from the context (a, b): embeddings of width/2 for a and b, concatenated, then
    Linear(width → width) → ReLU → Linear(width → m)."""

    def __init__(self, vocab_size: int, width: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width // 2)
        self.mlp = nn.Sequential(nn.Linear(2 * (width // 2), width), nn.ReLU(), nn.Linear(width, vocab_size))

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:  # (B, 2) int64 → (B, m)
        return self.mlp(self.embed(contexts).flatten(1))


# --- typed records ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Temperatures:
    """Held-out numbers of one seed at one ρ: the expected DRO loss per arm, the temperatures, their tracking."""

    seed: int
    rho: float
    loss: dict  # Arm.key → E_x E_{y~p(·|x)}[L_DRO(h, y; τ)] over the held-out contexts
    nll_excess: dict  # Arm.key → E_x E_y[−log softmax(h/τ)_y] − H(p): what the tempered model costs as a predictor
    tau_grid: float
    tau_learned: float
    spearman: float  # Spearman(τ_TempNet, τ*)
    median_factual: float
    median_creative: float
    oracle_median_factual: float
    oracle_median_creative: float
    kl_tempnet: float  # mean KL(softmax(h/τ_TempNet)‖u)
    kl_gap_tempnet: float  # mean |KL − ρ| for TempNet (0 for the oracle up to the bisection)
    kl_oracle: float

    @property
    def gap_closure(self) -> float:
        """(L_grid − L_TempNet) / (L_grid − L_oracle): 1 = the oracle, 0 = no better than one global τ."""
        gap = self.loss["grid"] - self.loss["oracle"]
        return (self.loss["grid"] - self.loss["tempnet"]) / gap if gap > 1e-12 else float("nan")


@dataclass(frozen=True)
class JointOutcome:
    """The joint variant of one seed: held-out excess NLL of an LM trained with plain CE and of one trained with
    TempNet, read at τ = 1 (raw logits, the code's evaluation) and tempered by the predicted τ (generation)."""

    seed: int
    nll_ce: float
    nll_joint_raw: float
    nll_joint_tempered: float
    median_factual: float
    median_creative: float


@dataclass(frozen=True)
class FigureData:
    """The first seed's held-out arrays for the figures."""

    tau_tempnet: tuple[float, ...]
    tau_oracle: tuple[float, ...]
    factual: tuple[bool, ...]
    grid: tuple[float, ...]  # the single temperatures tried
    grid_loss: tuple[float, ...]  # held-out loss of each single temperature
    tau_grid: float
    batch_contexts: tuple[tuple[int, int], ...]  # WEIGHTS_BATCH factual then WEIGHTS_BATCH creative contexts
    batch_tau: tuple[float, ...]
    batch_weights: tuple[tuple[float, ...], ...]  # softmax(h/τ_TempNet) per context
    batch_weights_tau1: tuple[tuple[float, ...], ...]  # softmax(h) per context
    true_probs: tuple[tuple[float, ...], ...]  # p(· | a, b) of the batch


# --- measurements -------------------------------------------------------------------------------------------


def expected_dro_loss(logits: torch.Tensor, probs: torch.Tensor, tau, rho: float) -> torch.Tensor:
    """E_{y~p}[L_DRO(h, y; τ)] per context ``(C,)``, exactly: the robust objective minus E_p[h_y]."""
    return robust_objective(logits, tau, rho) - (probs * logits).sum(1)


def excess_nll(logits: torch.Tensor, probs: torch.Tensor, tau) -> torch.Tensor:
    """E_{y~p}[−log softmax(h/τ)_y] − H(p) per context ``(C,)``: KL(p ‖ softmax(h/τ)), the predictor's cost."""
    tau = torch.as_tensor(tau, dtype=logits.dtype, device=logits.device).reshape(-1, 1)
    logq = torch.log_softmax(logits / tau, dim=1)
    return (probs * (probs.clamp_min(1e-30).log() - logq)).sum(1)


def spearman(x, y) -> float:
    """Spearman's rank correlation (scipy); NaN when either side is constant."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def tau_grid(tau_min: float, tau_max: float, n: int = GRID_POINTS) -> torch.Tensor:
    """``n`` log-spaced single temperatures over [τ_min, τ_max]."""
    return torch.logspace(math.log10(tau_min), math.log10(tau_max), n, dtype=torch.float64).float()


def best_single_tau(logits: torch.Tensor, probs: torch.Tensor, grid: torch.Tensor, rho: float) -> tuple[float, list]:
    """The grid temperature with the lowest mean expected DRO loss on ``logits`` (the TRAINING contexts: no
    selection on held-out data), and the mean loss of every grid point."""
    losses = [float(expected_dro_loss(logits, probs, float(t), rho).mean()) for t in grid]
    return float(grid[int(np.argmin(losses))]), losses


# --- the claims (pure functions of per-seed numbers) ---------------------------------------------------------


def gap_closure_claim(loss_grid, loss_tempnet, loss_oracle, margin: float = CLOSURE_MARGIN, decimals=CLAIM_DECIMALS):
    """Headline (the card's toy form of "TempNet beats a single temperature and tracks the per-input optimum"):
    on held-out contexts TempNet closes at least ``margin`` of the gap between the best single τ and τ*(h)."""
    grid, net, oracle = (np.asarray(v, float) for v in (loss_grid, loss_tempnet, loss_oracle))
    gap = grid - oracle
    with np.errstate(divide="ignore", invalid="ignore"):
        closure = np.where(gap > 1e-12, (grid - net) / gap, np.nan)
    return ClaimCheck(
        claim="TempNet's per-input τ lowers the held-out DRO loss well below the best single τ, towards the oracle τ*",
        quantity="gap closed (L_best single τ − L_TempNet) / (L_best single τ − L_τ*), held-out contexts, per seed",
        values=closure,
        margin=margin,
        headline=True,
        numbers={
            "L best single τ": float(grid.mean()),
            "L TempNet": float(net.mean()),
            "L oracle τ*": float(oracle.mean()),
        },
        detail=_inconclusive_text(closure, "a loss is not finite or the gap is 0: the verdict is inconclusive"),
        decimals=decimals,
    )


def tracking_claim(rank_corr, margin: float = TRACKING_MARGIN, decimals=CLAIM_DECIMALS) -> ClaimCheck:
    """Supporting (the card): TempNet's τ tracks the per-input optimum τ* on held-out contexts."""
    values = np.asarray(rank_corr, float)
    return ClaimCheck(
        claim="TempNet's τ(x) tracks the per-input optimum τ*(x) on unseen contexts",
        quantity="Spearman(τ_TempNet, τ*) over held-out contexts, per seed",
        values=values,
        margin=margin,
        detail=_inconclusive_text(values, "a correlation is undefined (constant τ): the verdict is inconclusive"),
        decimals=decimals,
    )


def factual_creative_claim(median_factual, median_creative, decimals=DIRECTION_DECIMALS) -> ClaimCheck:
    """Supporting (the card): τ adapts to the kind of context, in the direction the DRO optimum asks for: peaked
    (factual) logits need a larger τ to reach KL = ρ than flat (creative) ones."""
    return ClaimCheck.paired(
        "TempNet gives factual contexts a higher τ than creative ones (the direction of the oracle τ*)",
        "median τ_TempNet on factual − on creative held-out contexts, per seed",
        median_factual,
        median_creative,
        labels=("median τ factual", "median τ creative"),
        margin=0.0,
        detail=_inconclusive_text(
            np.asarray(median_factual, float) - np.asarray(median_creative, float),
            "a temperature is not finite: the verdict is inconclusive",
        ),
        decimals=decimals,
    )


def joint_claim(nll_joint, nll_ce, decimals=JOINT_DECIMALS) -> ClaimCheck:
    """Supporting, with the joint variant (the paper's GPT-2 pretraining): training the LM together with TempNet
    gives a lower held-out cross-entropy than plain CE, read at τ = 1 as the official evaluation does."""
    return ClaimCheck.paired(
        "An LM trained jointly with TempNet has a lower held-out cross-entropy than one trained with plain CE",
        "held-out excess NLL at τ = 1, joint TempNet LM − CE LM (nats), per seed",
        nll_joint,
        nll_ce,
        labels=("joint", "CE"),
        margin=0.0,
        higher_is_better=False,
        detail=_inconclusive_text(
            np.asarray(nll_joint, float) - np.asarray(nll_ce, float), "an NLL is not finite: inconclusive"
        ),
        decimals=decimals,
    )


def _inconclusive_text(values, text: str) -> str:
    return "" if np.isfinite(np.asarray(values, float)).all() else text


# --- the experiment -------------------------------------------------------------------------------------------


def log_schedule(n_steps: int, log_every: int) -> list[int]:
    """0, every ``log_every`` and the last step."""
    return sorted(set(range(0, n_steps + 1, log_every)) | {n_steps})


def checked(ctx: RunContext, module: nn.Module, series: str):
    """``on_step`` / ``on_log`` callbacks that stop a diverging run naming the step and series."""

    def on_step(step, loss):
        ctx.check(loss, step, series)

    def on_log(step):
        ctx.check_weights(module, step, series)

    return on_step, on_log


def draw_data(world: nt.NextTokenWorld, rows: torch.Tensor, n: int, generator: torch.Generator, device):
    """``n`` (context, next token) draws from the contexts ``rows``: ``(n, 2)`` contexts and ``(n,)`` tokens."""
    picked, tokens = nt.sample_next_tokens(world.probs[rows], n, generator)
    return world.contexts[rows][picked].to(device), tokens.to(device)


def train_lm(ctx, world, rows, seed: int, temperature: nn.Module, series: str, on_log=None):
    """An LM trained on the contexts ``rows`` with :func:`train_tempnet` and ``temperature`` (τ ≡ 1: plain CE)."""
    p = ctx.p
    torch.manual_seed(seed)  # the same initial LM for the CE and the joint arms of a seed
    lm = NextTokenMLP(p.vocab_size, p.lm_width).to(ctx.device)
    gen = torch.Generator().manual_seed(seed + LABEL_SEED_OFFSET)
    contexts, labels = draw_data(world, rows, p.lm_steps * p.lm_batch, gen, ctx.device)
    on_step, check = checked(ctx, nn.ModuleList([lm, temperature]), series)

    def log(step):
        check(step)
        if on_log is not None:
            on_log(step, lm, temperature)

    tempnet_lr = p.lm_lr / p.joint_lr_ratio
    train_tempnet(
        lm,
        temperature,
        contexts,
        labels,
        rho=p.rho,
        n_steps=p.lm_steps,
        batch_size=p.lm_batch,
        tempnet_lr=tempnet_lr,
        lm_lr=p.lm_lr,
        generator=gen,
        log_steps=log_schedule(p.lm_steps, p.log_every),
        on_step=on_step,
        on_log=log,
    )
    check(p.lm_steps)
    return lm


def plug_in(ctx, world, lm, split, seed: int, rho: float, log: bool, bar=None) -> tuple[Temperatures, dict]:
    """TempNet and the learned global τ trained on top of the frozen ``lm`` at ``rho``; their held-out numbers
    next to τ = 1, the best grid τ and the oracle. Logs the curves when ``log``. Returns the record and the
    first-seed arrays (a dict of tensors) for the figures."""
    p = ctx.p
    train_rows, test_rows = split
    with torch.no_grad():
        h_all = lm(world.contexts.to(ctx.device))
    h_tr, h_te = h_all[train_rows], h_all[test_rows]
    probs = world.probs.to(ctx.device)
    p_tr, p_te = probs[train_rows], probs[test_rows]
    factual = world.factual.to(ctx.device)[test_rows]
    grid = tau_grid(p.tau_min, p.tau_max)
    tau_best, _ = best_single_tau(h_tr, p_tr, grid, rho)
    with torch.no_grad():
        tau_star = optimal_tau(h_te, rho, p.tau_min, p.tau_max)
    constant = {FIXED.key: 1.0, GRID.key: tau_best, ORACLE.key: tau_star}

    def numbers(tau) -> tuple[float, float]:
        return (
            float(expected_dro_loss(h_te, p_te, tau, rho).mean()),
            float(excess_nll(h_te, p_te, tau).mean()),
        )

    fixed_numbers = {key: numbers(tau) for key, tau in constant.items()}
    gen = torch.Generator().manual_seed(seed + 2 * LABEL_SEED_OFFSET)
    contexts, labels = draw_data(world, train_rows.cpu(), p.n_steps * p.batch_size, gen, ctx.device)
    modules = {
        TEMPNET.key: TempNet(p.vocab_size, p.hidden, p.tau_min, p.tau_max, p.dropout).to(ctx.device),
        LEARNED.key: GlobalTemperature(p.tau_min, p.tau_max).to(ctx.device),
    }
    suffix = f" seed {seed}" if rho == p.rho else f" ρ={rho:g} seed {seed}"
    for arm in (TEMPNET, LEARNED):
        module = modules[arm.key]
        on_step, check = checked(ctx, module, arm.label + suffix)

        def on_log(step, arm=arm, module=module, check=check):
            check(step)
            if not log:
                return
            with torch.no_grad():
                tau = module(h_te)[:, 0]
            loss, nll = numbers(tau)
            ctx.history.log(step, arm.label, "robust_loss", loss, seed=seed)
            ctx.history.log(step, arm.label, "nll_excess", nll, seed=seed)
            if arm is TEMPNET:
                ctx.history.log(step, "TempNet, factual", "median_tau", float(tau[factual].median()), seed=seed)
                ctx.history.log(step, "TempNet, creative", "median_tau", float(tau[~factual].median()), seed=seed)
            if arm is TEMPNET:  # the constant arms, once per logged step, so that every curve spans the run
                for key, (c_loss, c_nll) in fixed_numbers.items():
                    label = next(a.label for a in ARMS if a.key == key)
                    ctx.history.log(step, label, "robust_loss", c_loss, seed=seed)
                    ctx.history.log(step, label, "nll_excess", c_nll, seed=seed)

        steps = log_schedule(p.n_steps, p.log_every)
        train_tempnet(
            lm,
            module,
            contexts,
            labels,
            rho=rho,
            n_steps=p.n_steps,
            batch_size=p.batch_size,
            tempnet_lr=p.tempnet_lr,
            generator=gen,
            log_steps=steps,
            on_step=on_step,
            on_log=on_log,
        )
        check(p.n_steps)
        if bar is not None:
            bar.update(1)
    with torch.no_grad():
        tau_net = modules[TEMPNET.key](h_te)[:, 0]
        tau_learned = float(modules[LEARNED.key](h_te[:1])[0, 0])
    loss = {key: v[0] for key, v in fixed_numbers.items()}
    nll = {key: v[1] for key, v in fixed_numbers.items()}
    loss[TEMPNET.key], nll[TEMPNET.key] = numbers(tau_net)
    loss[LEARNED.key], nll[LEARNED.key] = numbers(tau_learned)
    kl_net = kl_to_uniform(h_te, tau_net)
    record = Temperatures(
        seed=seed,
        rho=rho,
        loss=loss,
        nll_excess=nll,
        tau_grid=tau_best,
        tau_learned=tau_learned,
        spearman=spearman(tau_net.cpu().numpy(), tau_star.cpu().numpy()),
        median_factual=float(tau_net[factual].median()),
        median_creative=float(tau_net[~factual].median()),
        oracle_median_factual=float(tau_star[factual].median()),
        oracle_median_creative=float(tau_star[~factual].median()),
        kl_tempnet=float(kl_net.mean()),
        kl_gap_tempnet=float((kl_net - rho).abs().mean()),
        kl_oracle=float(kl_to_uniform(h_te, tau_star).mean()),
    )
    arrays = {"h_te": h_te, "p_te": p_te, "tau_net": tau_net, "tau_star": tau_star, "factual": factual}
    arrays.update({"grid": grid, "tau_best": tau_best, "test_rows": test_rows})
    return record, arrays


def figure_data(world, arrays, rho: float) -> FigureData:
    """The first seed's arrays as plain tuples (the held-out loss of every grid τ, a batch's DRO weights)."""
    h, probs, factual = arrays["h_te"], arrays["p_te"], arrays["factual"]
    grid_loss = [float(expected_dro_loss(h, probs, float(t), rho).mean()) for t in arrays["grid"]]
    pick = torch.cat([torch.nonzero(factual)[:WEIGHTS_BATCH, 0], torch.nonzero(~factual)[:WEIGHTS_BATCH, 0]])
    hb, tau_b = h[pick], arrays["tau_net"][pick]
    rows = arrays["test_rows"].cpu()[pick.cpu()]
    return FigureData(
        tau_tempnet=tuple(arrays["tau_net"].cpu().tolist()),
        tau_oracle=tuple(arrays["tau_star"].cpu().tolist()),
        factual=tuple(factual.tolist()),
        grid=tuple(arrays["grid"].tolist()),
        grid_loss=tuple(grid_loss),
        tau_grid=arrays["tau_best"],
        batch_contexts=tuple(tuple(c) for c in world.contexts[rows].tolist()),
        batch_tau=tuple(tau_b.cpu().tolist()),
        batch_weights=tuple(tuple(r) for r in dro_weights(hb, tau_b).cpu().tolist()),
        batch_weights_tau1=tuple(tuple(r) for r in dro_weights(hb, 1.0).cpu().tolist()),
        true_probs=tuple(tuple(r) for r in world.probs[rows].tolist()),
    )


def lm_logger(ctx, world, test_rows, seed: int, arm: Arm, tempered: bool):
    """An ``on_log(step, lm, temperature)`` that logs the LM's held-out excess NLL at τ = 1 (and, when
    ``tempered``, with its logits divided by the predicted τ)."""
    probs = world.probs.to(ctx.device)[test_rows]
    contexts = world.contexts.to(ctx.device)[test_rows]

    def on_log(step, lm, temperature):
        with torch.no_grad():
            h = lm(contexts)
            tau = temperature(h)
        raw = float(excess_nll(h, probs, 1.0).mean())
        ctx.history.log(step, arm.label + (", τ = 1" if tempered else ""), "lm_nll_excess", raw, seed=seed)
        if tempered:
            nll = float(excess_nll(h, probs, tau).mean())
            ctx.history.log(step, arm.label + ", tempered", "lm_nll_excess", nll, seed=seed)

    return on_log


def joint_variant(ctx, world, split, seed: int, ce_lm: nn.Module) -> JointOutcome:
    """An LM trained from scratch together with TempNet (τ ∈ [joint_tau_min, joint_tau_max], TempNet's rate
    ``lm_lr / joint_lr_ratio``), against ``ce_lm`` (same initial weights and data, plain CE)."""
    p = ctx.p
    train_rows, test_rows = split
    probs = world.probs.to(ctx.device)[test_rows]
    factual = world.factual.to(ctx.device)[test_rows]
    contexts = world.contexts.to(ctx.device)[test_rows]
    tempnet = TempNet(p.vocab_size, p.hidden, p.joint_tau_min, p.joint_tau_max, p.dropout).to(ctx.device)
    log = lm_logger(ctx, world, test_rows, seed, JOINT_LM, tempered=True)
    lm = train_lm(ctx, world, train_rows.cpu(), seed, tempnet, f"{JOINT_LM.label} seed {seed}", on_log=log)
    with torch.no_grad():
        h, h_ce = lm(contexts), ce_lm(contexts)
        tau = tempnet(h)[:, 0]
    return JointOutcome(
        seed=seed,
        nll_ce=float(excess_nll(h_ce, probs, 1.0).mean()),
        nll_joint_raw=float(excess_nll(h, probs, 1.0).mean()),
        nll_joint_tempered=float(excess_nll(h, probs, tau).mean()),
        median_factual=float(tau[factual].median()),
        median_creative=float(tau[~factual].median()),
    )


#: the per-seed numbers of :class:`Temperatures` averaged into the run's metrics
SUMMARY_FIELDS = (
    "gap_closure",
    "spearman",
    "median_factual",
    "median_creative",
    "oracle_median_factual",
    "oracle_median_creative",
    "tau_grid",
    "tau_learned",
    "kl_tempnet",
    "kl_gap_tempnet",
    "kl_oracle",
)


def final_metrics(main: list[Temperatures], sweep: list[Temperatures], joint: list[JointOutcome]) -> dict:
    """Means over seeds of the final numbers (flat floats for the store)."""
    out = {}
    for arm in ARMS:
        out[f"loss_{arm.key}"] = float(np.mean([t.loss[arm.key] for t in main]))
        out[f"nll_excess_{arm.key}"] = float(np.mean([t.nll_excess[arm.key] for t in main]))
    for name in SUMMARY_FIELDS:
        out[name] = float(np.mean([getattr(t, name) for t in main]))
    for rho in sorted({t.rho for t in sweep}):
        rows = [t for t in sweep if t.rho == rho]
        out[f"gap_closure_rho{rho:g}"] = float(np.mean([t.gap_closure for t in rows]))
        out[f"spearman_rho{rho:g}"] = float(np.mean([t.spearman for t in rows]))
    for name in ("nll_ce", "nll_joint_raw", "nll_joint_tempered"):
        if joint:
            out[f"joint_{name}"] = float(np.mean([getattr(j, name) for j in joint]))
    return out


@method_run(Knobs, figures=make_figures)
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    world = nt.make_next_token_world(p.vocab_size)
    sweep_rhos = [r for r in SWEEP_RHOS if r != p.rho] if p.rho_sweep else []
    bar = ctx.bar(len(seeds) * 2 * (1 + len(sweep_rhos)), f"TempNet + global τ, {len(seeds)} seeds")
    main, sweep, joint, figs = [], [], [], None
    for seed in seeds:
        split = nt.split_contexts(world.n_contexts, p.train_frac, seed)
        split = tuple(s.to(ctx.device) for s in split)
        ce_log = lm_logger(ctx, world, split[1], seed, CE_LM, tempered=False) if p.joint else None
        lm = train_lm(ctx, world, split[0].cpu(), seed, FixedTemperature(1.0), f"{CE_LM.label} seed {seed}", ce_log)
        record, arrays = plug_in(ctx, world, lm, split, seed, p.rho, log=True, bar=bar)
        main.append(record)
        if figs is None:
            figs = figure_data(world, arrays, p.rho)
        for rho in sweep_rhos:
            sweep.append(plug_in(ctx, world, lm, split, seed, rho, log=False, bar=bar)[0])
        if p.joint:
            joint.append(joint_variant(ctx, world, split, seed, lm))
    bar.close()
    if p.rho_sweep:
        sweep = sorted(sweep + main, key=lambda t: (t.rho, t.seed))
    claims = [
        gap_closure_claim(
            [t.loss["grid"] for t in main], [t.loss["tempnet"] for t in main], [t.loss["oracle"] for t in main]
        ),
        tracking_claim([t.spearman for t in main]),
        factual_creative_claim([t.median_factual for t in main], [t.median_creative for t in main]),
    ]
    if joint:
        claims.append(joint_claim([j.nll_joint_raw for j in joint], [j.nll_ce for j in joint]))
    extras = {"temperatures": main, "sweep": sweep, "joint": joint, "figure_data": figs, "seeds": list(seeds)}
    return Outcome(metrics=final_metrics(main, sweep, joint), claims=claims, extras=extras)

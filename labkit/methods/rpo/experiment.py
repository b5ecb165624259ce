"""RPO's experiment: the typed knobs, the gold-reward bandit, DPO and RPO arms (+ a β × η grid), the claims, run().

Both arms train on the same bandits, pairs and labels (:mod:`labkit.data.preferences`), one problem per seed;
the paper's losses and the training loop are in :mod:`.method`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, check_arms, knob, method_run, params_of
from labkit.data import preferences as prefs

from .figures import make_figures
from .method import METRICS, train_arms


@dataclass(frozen=True)
class Knobs:
    eta: float = knob(1.0, low=0.0, high=100.0, help="RPO weight η: loss − η·β·log π(y_w); η = 0 is DPO")
    beta: float = knob(0.1, low=1e-3, high=10.0, log=True, help="DPO temperature β")
    n_pairs: int = knob(
        300, full=3000, low=10, high=100_000, help="preference pairs N drawn from π_ref × π_ref (ties dropped)"
    )
    ref_width: float = knob(
        1.0,
        low=0.05,
        high=20.0,
        log=True,
        help="coverage width of π_ref ∝ exp(−‖φ‖²/width): larger covers far-out responses",
    )
    eta_high: float = knob(5.0, low=0.0, high=100.0, main=False, help="η of the second, stronger RPO arm")
    n_responses: int = knob(
        200, standard=2000, full=10_000, low=2, high=1_000_000, main=False, help="K responses in the bandit"
    )
    dim: int = knob(8, standard=16, full=32, low=1, high=1024, main=False, help="feature dimension d")
    n_seeds: int = knob(
        10,
        full=100,
        low=1,
        high=1000,
        main=False,
        help="independent problems (seed, seed+1, …): new bandit, pairs and labels; all arms share them",
    )
    n_steps: int = knob(2000, low=1, high=100_000, main=False, help="full-batch Adam steps")
    lr: float = knob(0.05, low=1e-5, high=1.0, log=True, main=False, help="Adam learning rate")
    log_every: int = knob(
        100,
        low=1,
        high=100_000,
        main=False,
        help="log every this many steps (and 20× denser during the first log_every steps)",
    )
    support_mass: float = knob(
        0.99,
        low=0.5,
        high=0.999999,
        main=False,
        help="π_ref's support = the fewest most-probable responses holding this much π_ref mass",
    )
    sweep: bool = knob(True, main=False, help="also train a β × η grid (final numbers only) to show the trade-off")


PARAMS = params_of(Knobs)
MAIN_METRIC = "gold_reward"

#: the β × η grid trained alongside the three arms (final numbers only)
SWEEP_BETAS = (0.03, 0.1, 0.3)
SWEEP_ETAS = (0.0, 0.1, 0.3, 1.0, 3.0, 5.0, 20.0)
#: logging is this many times denser during the first ``log_every`` steps (DPO's early hump)
EARLY_LOG_DENSITY = 20
#: decimals of each claim's printed numbers, from the spread measured across CPU kernels and thread counts at
#: quick (benchmarks/spread/rpo.json): the gold-reward gap and its interval move by up to 6e-5, DPO's
#: log π(y_w) change by 1e-5, RPO's by 2e-6; each claim prints a last digit at least 20× its largest spread
GOLD_DECIMALS = 2
DPO_DROP_DECIMALS = 2
RPO_HOLD_DECIMALS = 3


# --- arms and typed records --------------------------------------------------------------------------------


def make_arms(eta: float, eta_high: float) -> tuple[Arm, Arm, Arm]:
    """DPO, RPO with η and RPO with the larger η (labelled "(eta_high)" when the two η are equal)."""
    high = f"RPO η={eta_high:g}" + (" (eta_high)" if eta_high == eta else "")
    return Arm("dpo", "DPO"), Arm("rpo", f"RPO η={eta:g}"), Arm("rpo_high", high)


@dataclass(frozen=True)
class ArmOutcome:
    """One arm's final numbers, one value per seed (seed order of the run)."""

    arm: Arm
    beta: float
    eta: float
    gold: tuple[float, ...]
    logp_chosen_change: tuple[float, ...]  # mean log π(y_w), final − initial
    kl: tuple[float, ...]
    mass_out: tuple[float, ...]
    probs_seed0: tuple[float, ...]  # the final policy π(a) of the first seed, for the figures


@dataclass(frozen=True)
class Reference:
    """π_ref's numbers, per seed, and the first seed's responses (for the figures)."""

    gold: tuple[float, ...]
    mass_out: tuple[float, ...]
    support_mass: float
    support_size: tuple[int, ...]
    pairs_kept: tuple[int, ...]
    norm_seed0: tuple[float, ...]
    gold_seed0: tuple[float, ...]
    probs_seed0: tuple[float, ...]


# --- the claims (pure functions of per-seed numbers) -----------------------------------------------------


def gold_claim(gold_dpo, gold_rpo, eta: float, decimals: int = GOLD_DECIMALS) -> ClaimCheck:
    """Headline: RPO's final gold reward beats DPO's. The paper reports "RPO beats DPO" (AlpacaEval 2.0,
    MT-Bench), so the margin is 0 on the per-seed gap gold(RPO) − gold(DPO)."""
    gold_dpo, gold_rpo = np.asarray(gold_dpo, float), np.asarray(gold_rpo, float)
    gap = gold_rpo - gold_dpo
    return ClaimCheck(
        claim=f"RPO(η={eta:g}) ends with a higher gold reward than DPO",
        quantity="final gold reward E_π[r*], RPO − DPO, per seed",
        values=gap,
        margin=0.0,
        headline=True,
        numbers={"gold DPO": float(gold_dpo.mean()), "gold RPO": float(gold_rpo.mean())},
        detail=_diverged(gap, "a gold reward is not finite (an arm diverged): the verdict is inconclusive"),
        decimals=decimals,
    )


def dpo_chosen_drop_claim(change_dpo, decimals: int = DPO_DROP_DECIMALS) -> ClaimCheck:
    """Supporting (the paper's Figure 1): under DPO the chosen responses' likelihood drops over training."""
    change = np.asarray(change_dpo, float)
    return ClaimCheck(
        claim="DPO lowers the likelihood of the chosen responses over training",
        quantity="mean log π(y_w), final − initial (nats), DPO, per seed",
        values=change,
        margin=0.0,
        higher_is_better=False,
        detail=_diverged(change, "a log-likelihood is not finite: the verdict is inconclusive"),
        decimals=decimals,
    )


def rpo_chosen_hold_claim(change_rpo, eta: float, decimals: int = RPO_HOLD_DECIMALS) -> ClaimCheck:
    """Supporting (the paper's Figure 1): RPO's SFT term prevents that drop."""
    change = np.asarray(change_rpo, float)
    return ClaimCheck(
        claim=f"RPO(η={eta:g}) does not lower the likelihood of the chosen responses",
        quantity=f"mean log π(y_w), final − initial (nats), RPO η={eta:g}, per seed",
        values=change,
        margin=0.0,
        detail=_diverged(change, "a log-likelihood is not finite: the verdict is inconclusive"),
        decimals=decimals,
    )


def _diverged(values, text: str) -> str:
    return "" if np.isfinite(values).all() else text


# --- the experiment -----------------------------------------------------------------------------------------


def log_schedule(n_steps: int, log_every: int) -> list[int]:
    """Steps to log: 0, every ⌈log_every/20⌉ up to log_every (the early hump), every log_every, and the last."""
    early = max(1, log_every // EARLY_LOG_DENSITY)
    steps = set(range(0, min(log_every, n_steps) + 1, early)) | set(range(0, n_steps + 1, log_every))
    return sorted(steps | {n_steps})


def log_step(ctx: RunContext, step: int, metrics, arms, seeds) -> None:
    """History rows of one logged step for ``arms`` (the first ``len(arms)`` rows of ``metrics``)."""
    for a, arm in enumerate(arms):
        for s, seed in enumerate(seeds):
            for metric in METRICS:
                ctx.history.log(step, arm.label, metric, metrics[metric][a, s], seed=seed)


def sweep_frame(series, betas, etas, seeds):
    """Final numbers of the β × η grid as a tidy frame (beta, eta, seed, gold_reward, logp_chosen, kl, ...)."""
    import pandas as pd

    rows = [
        {"beta": b, "eta": e, "seed": seed, **{m: float(series[m][-1, a, s]) for m in METRICS}}
        for a, (b, e) in enumerate(zip(betas, etas))
        for s, seed in enumerate(seeds)
    ]
    return pd.DataFrame(rows)


def arm_outcomes(arms, betas, etas, series, final_logp) -> list[ArmOutcome]:
    """Typed final numbers of the three arms from the ``(T, A, S)`` series."""
    change = series["logp_chosen"][-1] - series["logp_chosen"][0]
    return [
        ArmOutcome(
            arm=arm,
            beta=betas[a],
            eta=etas[a],
            gold=tuple(series["gold_reward"][-1, a].tolist()),
            logp_chosen_change=tuple(change[a].tolist()),
            kl=tuple(series["kl"][-1, a].tolist()),
            mass_out=tuple(series["mass_out"][-1, a].tolist()),
            probs_seed0=tuple(final_logp[a, 0].exp().cpu().tolist()),
        )
        for a, arm in enumerate(arms)
    ]


def reference_of(series, bandit, support, pairs, support_mass: float) -> Reference:
    """π_ref's numbers: every arm starts there (θ = 0), so step 0 of arm 0 is π_ref."""
    return Reference(
        gold=tuple(series["gold_reward"][0, 0].tolist()),
        mass_out=tuple(series["mass_out"][0, 0].tolist()),
        support_mass=support_mass,
        support_size=tuple(support.sum(-1).tolist()),
        pairs_kept=tuple(pairs.counts.tolist()),
        norm_seed0=tuple(bandit.features[0].norm(dim=-1).cpu().tolist()),
        gold_seed0=tuple(bandit.gold[0].cpu().tolist()),
        probs_seed0=tuple(bandit.ref_logp[0].exp().cpu().tolist()),
    )


def final_metrics(series, outcomes: list[ArmOutcome], reference: Reference) -> dict[str, float]:
    """Means over seeds of the final numbers, plus DPO's peak gold (over logged steps)."""
    out = {
        "gold_reference": float(np.mean(reference.gold)),
        "gold_peak_dpo": float(series["gold_reward"][:, 0].mean(-1).max()),
    }
    for o in outcomes:
        key = o.arm.key
        out[f"gold_{key}"] = float(np.mean(o.gold))
        out[f"logp_chosen_change_{key}"] = float(np.mean(o.logp_chosen_change))
        out[f"kl_{key}"] = float(np.mean(o.kl))
        out[f"mass_out_{key}"] = float(np.mean(o.mass_out))
    out["gold_gap_rpo_minus_dpo"] = out["gold_rpo"] - out["gold_dpo"]
    return out


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    bandit = prefs.make_gold_bandit(p.n_responses, p.dim, seeds, p.ref_width).to(ctx.device)
    pairs = prefs.sample_bt_pairs(bandit.gold, bandit.ref_logp, p.n_pairs, seeds).to(ctx.device)
    support = prefs.support_mask(bandit.ref_logp, p.support_mass)
    arms = make_arms(p.eta, p.eta_high)
    betas = [p.beta] * len(arms)
    etas = [0.0, p.eta, p.eta_high]
    if p.sweep:
        betas += [b for b in SWEEP_BETAS for _ in SWEEP_ETAS]
        etas += [e for _ in SWEEP_BETAS for e in SWEEP_ETAS]
    n_arms = len(arms)
    all_names = [a.label for a in arms] + [f"sweep β={b:g} η={e:g}" for b, e in zip(betas[n_arms:], etas[n_arms:])]
    bar = ctx.bar(p.n_steps, f"DPO + RPO, {len(betas)} arms × {len(seeds)} seeds")

    def on_step(step, losses, theta):
        check_arms(losses, step, all_names, weights=[theta])
        bar.update(1)

    series, final_logp = train_arms(
        bandit,
        pairs,
        torch.tensor(betas, device=ctx.device),
        torch.tensor(etas, device=ctx.device),
        p.n_steps,
        p.lr,
        log_schedule(p.n_steps, p.log_every),
        support,
        on_step=on_step,
        on_log=lambda step, m: log_step(ctx, step, m, arms, seeds),
    )
    bar.close()
    main = {k: v[:, :n_arms] for k, v in series.items()}
    outcomes = arm_outcomes(arms, betas, etas, main, final_logp)
    reference = reference_of(main, bandit, support, pairs, p.support_mass)
    dpo, rpo = outcomes[0], outcomes[1]
    claims = [
        gold_claim(dpo.gold, rpo.gold, p.eta),
        dpo_chosen_drop_claim(dpo.logp_chosen_change),
        rpo_chosen_hold_claim(rpo.logp_chosen_change, p.eta),
    ]
    extras = {"arms": outcomes, "reference": reference, "seeds": list(seeds)}
    if p.sweep:
        extras["sweep"] = sweep_frame(
            {k: v[:, n_arms:] for k, v in series.items()}, betas[n_arms:], etas[n_arms:], seeds
        )
    return Outcome(metrics=final_metrics(main, outcomes, reference), claims=claims, extras=extras)

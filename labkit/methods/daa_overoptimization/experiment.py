"""DAA over-optimisation's experiment: the typed knobs, the length toy, the runs (objective × β), the claims, run().

The "language" is the length toy of :func:`labkit.data.preferences.make_length_candidates` (P prompts × M candidates,
gold peaks at length ℓ*, π_ref writes short answers); the paper's loss, the policy and the training loop are in
:mod:`.method`. Every run of every data seed trains at once (one batched tensor), so extra seeds cost little.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, check_arms, knob, method_run, params_of
from labkit.data import preferences as prefs

from .figures import make_figures
from .method import METRICS, OBJECTIVES, Hump, LawFit, fit_scaling_law, hump, init_head, steps_per_epoch, train_daa

LABELS = {"dpo": "DPO", "ipo": "IPO", "slic": "SLiC"}
HEADS = ("linear", "quadratic", "mlp")
#: c₂ of r* = q + c₁ℓ − c₂ℓ²; c₁ = 2·c₂·ℓ* puts the peak at ℓ* (the card's 0.6ℓ − 0.06ℓ² for ℓ* = 5)
GOLD_QUADRATIC = 0.06
#: each data seed's batch order comes from Generator(seed + ORDER_SEED_OFFSET), apart from the data's own streams
ORDER_SEED_OFFSET = 2**20


@dataclass(frozen=True)
class Knobs:
    objective: str = knob("all", choices=("all",) + OBJECTIVES, help="which DAA losses to train: all three, or one")
    betas: str = knob(
        "0.01,0.1,1",
        standard="0.01,0.05,0.1,0.5,1",
        full="0.01,0.05,0.1,0.5,1",
        help="comma-separated β values (each in [1e-4, 100]); small β = large KL budget",
    )
    lr: float = knob(0.05, standard=0.01, full=0.01, low=1e-5, high=1.0, log=True, help="Adam learning rate")
    n_pairs: int = knob(
        4000,
        standard=1500,
        full=4000,
        low=32,
        high=200_000,
        help="preference pairs y₁, y₂ ~ π_ref drawn over all prompts (ties dropped)",
    )
    gold_peak: float = knob(
        5.0, low=1.0, high=20.0, help="length ℓ* at which the gold reward peaks (r* = q + 2c₂ℓ*·ℓ − c₂ℓ², c₂ = 0.06)"
    )
    head: str = knob(
        "linear",
        standard="mlp",
        full="mlp",
        choices=HEADS,
        main=False,
        help="f_θ: linear in (ℓ/20, q); quadratic adds (ℓ/20)²; mlp is 2→hidden→1 ReLU",
    )
    hidden: int = knob(32, low=1, high=1024, main=False, help="hidden units of the mlp head")
    epochs: int = knob(2, standard=20, full=20, low=1, high=1000, main=False, help="passes over the pairs")
    batch_size: int = knob(64, low=1, high=100_000, main=False, help="pairs per Adam step")
    log_every: int = knob(
        5, low=1, high=100_000, main=False, help="exact KL and gold every this many steps (and at every epoch end)"
    )
    n_seeds: int = knob(
        5,
        standard=5,
        full=10,
        low=1,
        high=1000,
        main=False,
        help="data seeds (seed, seed+1, …): new candidates, pairs, labels and batch order; trained as one batch",
    )
    n_prompts: int = knob(32, low=1, high=10_000, main=False, help="prompts P")
    n_candidates: int = knob(40, low=2, high=10_000, main=False, help="candidate responses M per prompt")

    def __post_init__(self):
        parse_betas(self.betas)  # free text is checked with the other knobs, before any work


PARAMS = params_of(Knobs)
MAIN_METRIC = "gold_reward"

# --- the claims' margins, fixed before any run ------------------------------------------------------------
#: over-optimisation: peak gold − final gold at the smallest β (the card's 0.25; the paper gives no number, and a
#: drop ≥ 0 holds by construction, so the claim needs a positive bar; the card's prototype measured ≈ 0.5)
MIN_DROP = 0.25
#: scaling law: R² of the per-seed pooled DPO fit (the card's reading of "well described"; the paper gives none)
MIN_R2 = 0.6
#: intra-epoch: the peak lies before the end of this many epochs (the card: "before the end of epoch 1")
PEAK_BY_EPOCH = 1.0
#: a run "peaks" when gold falls at least this much after its best checkpoint (a hump, not a plateau)
HUMP_MIN_DROP = 0.05
#: printed decimals of the claims (benchmarks/spread/daa_overoptimization.json: largest spread of a claim value
#: across kernels and thread counts is below 1e-5, so 3 decimals print the same everywhere)
CLAIM_DECIMALS = 3


# --- the toy and its runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One trained run: a DAA objective at one β. ``arm.key`` names metrics, ``arm.label`` the history series."""

    kind: str
    beta: float

    @property
    def arm(self) -> Arm:
        return Arm(f"{self.kind}_b{self.beta:g}", f"{LABELS[self.kind]} β={self.beta:g}")

    @property
    def objective(self) -> str:
        return LABELS[self.kind]


@dataclass
class RunOutcome:
    """A run's results: its hump per seed, the curves (mean over seeds, one value per checkpoint) and the final
    numbers (mean over seeds)."""

    spec: RunSpec
    humps: list[Hump]
    curves: dict[str, list[float]]
    final_gold: float
    final_kl: float
    final_length: float

    @property
    def peak_gold(self) -> float:
        return float(np.mean([h.peak_gold for h in self.humps]))


#: a plain ASCII number (float() would also take "１" and "1_0")
ASCII_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse_betas(text: str) -> list[float]:
    """ "0.01, 0.1,1" → [0.01, 0.1, 1.0]; ``ValueError`` unless every entry is a number in [1e-4, 100], no repeats."""
    try:
        betas = [float(b) for b in str(text).split(",") if b.strip()]
        if not all(ASCII_NUMBER.fullmatch(b.strip()) for b in str(text).split(",") if b.strip()):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"betas={text!r} is not allowed: expected comma-separated numbers, e.g. '0.01,0.1,1'"
        ) from None
    if not betas or any(not 1e-4 <= b <= 100 for b in betas) or len(set(betas)) != len(betas):
        raise ValueError(
            f"betas={text!r} is not allowed: expected distinct numbers in [0.0001, 100], e.g. '0.01,0.1,1'"
        )
    return betas


def make_runs(objective: str, betas: Sequence[float]) -> list[RunSpec]:
    """Every trained run: each objective (``"all"`` = DPO, IPO, SLiC) × each β."""
    kinds = OBJECTIVES if objective == "all" else (objective,)
    return [RunSpec(k, float(b)) for k in kinds for b in betas]


def make_problem(seed: int, n_prompts: int, n_candidates: int, n_pairs: int, gold_peak: float):
    """One data seed: candidates from ``torch.Generator(seed)`` (r* = q + 2c₂ℓ*·ℓ − c₂ℓ²) and ⌈N/P⌉ pairs per
    prompt from π_ref × π_ref (prompt i uses pair seed seed·P + i; seed 0 → range(P)). The surplus over N is
    masked off (the last pair of the first prompts), as are ties. Returns (candidates, pairs) with pair indices
    flattened over prompt × candidate: ``prompt·M + candidate``, shape ``(P·⌈N/P⌉,)``."""
    gen = torch.Generator().manual_seed(int(seed))
    cands = prefs.make_length_candidates(
        n_prompts, n_candidates, gen, gold_linear=2 * GOLD_QUADRATIC * gold_peak, gold_quadratic=GOLD_QUADRATIC
    )
    per = math.ceil(n_pairs / n_prompts)
    pairs = prefs.sample_bt_pairs(
        cands.gold, cands.ref_logp, per, seeds=[seed * n_prompts + i for i in range(n_prompts)]
    )
    mask = pairs.mask.clone()
    mask[: per * n_prompts - n_pairs, -1] = False  # the surplus over N
    offset = (torch.arange(n_prompts) * n_candidates).unsqueeze(-1)
    flat = prefs.PreferencePairs(
        (pairs.chosen + offset).reshape(-1), (pairs.rejected + offset).reshape(-1), mask.reshape(-1)
    )
    return cands, flat


def head_inputs(cands, head: str) -> torch.Tensor:
    """f_θ's inputs per candidate: (ℓ/ℓ_max, q), plus (ℓ/ℓ_max)² for the quadratic head. ``(..., M, F)``."""
    x = cands.features
    return torch.cat([x, x[..., :1] ** 2], dim=-1) if head == "quadratic" else x


def stack_problems(problems, head: str, device) -> dict[str, torch.Tensor]:
    """The seeds' candidates and pairs as ``(S, ...)`` tensors on ``device`` (see :func:`.method.train_daa`)."""
    cands = [c for c, _ in problems]
    pairs = [q for _, q in problems]
    data = {
        "x": torch.stack([head_inputs(c, head) for c in cands]),
        "ref_logp": torch.stack([c.ref_logp for c in cands]),
        "gold": torch.stack([c.gold for c in cands]),
        "length": torch.stack([c.length for c in cands]),
        "chosen": torch.stack([q.chosen for q in pairs]),
        "rejected": torch.stack([q.rejected for q in pairs]),
        "mask": torch.stack([q.mask for q in pairs]),
    }
    return {k: v.to(device) for k, v in data.items()}


def checkpoints(n_steps: int, per_epoch: int, log_every: int) -> list[int]:
    """0, every ``log_every`` steps, every epoch end, and the last step."""
    return sorted(set(range(0, n_steps + 1, log_every)) | set(range(0, n_steps + 1, per_epoch)) | {n_steps})


def fit_per_seed(series, runs: Sequence[RunSpec], kind: str) -> list[LawFit]:
    """The law fitted, per seed, to one objective's checkpoints pooled over its β values (gain over π_ref)."""
    cols = [a for a, r in enumerate(runs) if r.kind == kind]
    gain = series["gold_reward"] - series["gold_reward"][0, 0]  # (T, A, S): every run starts at π_ref
    return [fit_scaling_law(series["sqrt_kl"][:, cols, s], gain[:, cols, s]) for s in range(gain.shape[-1])]


# --- the claims: pure functions of per-seed numbers --------------------------------------------------------


def overoptimization_claim(drops: Mapping[str, Sequence[float]], beta: float, min_drop: float = MIN_DROP):
    """Headline. ``drops[objective]`` = peak gold − final gold per seed, at β = ``beta`` (the smallest); the value
    per seed is the smallest drop over the objectives, so the claim holds only if all three over-optimise."""
    per_seed = np.min(np.array([list(v) for v in drops.values()], float), axis=0)
    return ClaimCheck(
        claim=f"all DAAs over-optimise: at β={beta:g}, {', '.join(drops)} each lose ≥ {min_drop:g} gold after "
        "their peak by the end of training",
        quantity="min over objectives of gold(peak) − gold(final)",
        values=per_seed,
        margin=min_drop,
        headline=True,
        numbers={f"{k} drop": float(np.mean(v)) for k, v in drops.items()},
        detail="drop per objective: mean over seeds; the margin is the card's (the paper gives no number)",
        decimals=CLAIM_DECIMALS,
    )


def kl_growth_claim(growth: Mapping[str, Sequence[float]], beta: float) -> ClaimCheck:
    """``growth[objective]`` = KL(final) − KL(peak) per seed at β = ``beta``: the drop happens while the policy keeps
    moving away from π_ref (over-optimisation along the KL axis), for every objective."""
    per_seed = np.min(np.array([list(v) for v in growth.values()], float), axis=0)
    return ClaimCheck(
        claim=f"the drop comes with more KL: at β={beta:g}, KL(final) > KL(peak) for {', '.join(growth)}",
        quantity="min over objectives of KL(final) − KL(peak) (nats)",
        values=per_seed,
        margin=0.0,
        numbers={f"{k} KL growth": float(np.mean(v)) for k, v in growth.items()},
        decimals=CLAIM_DECIMALS,
    )


def scaling_law_claim(r2: Sequence[float], label: str = "DPO", min_r2: float = MIN_R2, fits=()) -> ClaimCheck:
    """``r2`` per seed of the pooled fit of R(d) = d(α − β_s log d) over one objective's checkpoints."""
    numbers = {}
    if fits:
        numbers = {k: float(np.mean([getattr(f, k) for f in fits])) for k in ("alpha", "beta_s", "peak_d")}
    return ClaimCheck(
        claim=f"scaling law: R(d) = d·(α − β_s·log d), d = √KL, fitted to {label}'s checkpoints (all β) "
        f"describes them: R² ≥ {min_r2:g}",
        quantity=f"R² of the {label} fit",
        values=r2,
        margin=min_r2,
        numbers=numbers,
        detail="α, β_s, peak_d = e^(α/β_s − 1): means over seeds (reported, not compared); the margin is the card's",
        decimals=CLAIM_DECIMALS,
    )


def hump_shape_claim(beta_s: Sequence[float], label: str = "DPO") -> ClaimCheck:
    """``beta_s`` per seed: the fitted law bends down (β_s > 0), i.e. it is a hump rather than a steady rise."""
    return ClaimCheck(
        claim=f"the fitted {label} law is a hump: β_s > 0",
        quantity=f"β_s of the {label} fit",
        values=beta_s,
        margin=0.0,
        decimals=CLAIM_DECIMALS,
    )


def intra_epoch_claim(peak_epochs: Mapping[str, Sequence[float]], beta: float, by: float = PEAK_BY_EPOCH):
    """The paper's statement: the over-optimising runs (β = ``beta``, the smallest) reach their peak within the first
    epoch. ``peak_epochs[objective]`` = the peak checkpoint's position in epochs, per seed; value per seed = the
    mean over the objectives."""
    per_seed = np.mean(np.array([list(v) for v in peak_epochs.values()], float), axis=0)
    return ClaimCheck(
        claim=f"intra-epoch peak: the over-optimising runs (β={beta:g}) peak before the end of epoch {by:g}",
        quantity="peak position in epochs, mean over objectives",
        values=per_seed,
        margin=by,
        higher_is_better=False,
        numbers={f"{k} peak epoch": float(np.mean(v)) for k, v in peak_epochs.items()},
        decimals=CLAIM_DECIMALS,
    )


def any_run_peaks_claim(humps: Mapping[str, Sequence[Hump]], n_epochs: float, by: float = PEAK_BY_EPOCH):
    """The card's wording: SOME run (any objective, any β) peaks inside epoch 1 and then loses ≥ HUMP_MIN_DROP.
    ``humps[run label]`` = its hump per seed. Value per seed: the earliest such peak (``n_epochs`` when none);
    the detail names the runs that carry it and whether their KL grew or fell after the peak."""
    names = list(humps)
    n_seeds = len(next(iter(humps.values())))
    values, carriers, kl_fell = [], {}, 0
    for s in range(n_seeds):
        early = [n for n in names if 0 < humps[n][s].peak_epoch < by and humps[n][s].drop >= HUMP_MIN_DROP]
        if not early:
            values.append(float(n_epochs))
            continue
        first = min(early, key=lambda n: humps[n][s].peak_epoch)
        values.append(humps[first][s].peak_epoch)
        carriers[first] = carriers.get(first, 0) + 1
        kl_fell += humps[first][s].kl_growth < 0
    carried = ", ".join(f"{n} ({k} of {n_seeds} seeds)" for n, k in carriers.items()) or "no run"
    return ClaimCheck(
        claim=f"some run peaks before the end of epoch {by:g} (any objective and β; then loses ≥ {HUMP_MIN_DROP:g})",
        quantity="earliest such peak, in epochs",
        values=values,
        margin=by,
        higher_is_better=False,
        detail=f"carried by {carried}; KL fell after that peak in {kl_fell} of {sum(carriers.values())} seeds"
        " (KL falling back is the loss pulling the policy toward π_ref, not over-optimisation along KL)",
        decimals=CLAIM_DECIMALS,
    )


# --- the experiment ----------------------------------------------------------------------------------------


def final_metrics(outcomes: Sequence[RunOutcome], gold_reference: float, fits: Mapping[str, LawFit]):
    """π_ref's gold and, per run (means over seeds), final gold, KL, length and peak gold; the pooled fits."""
    out = {"gold_reference": gold_reference}
    for o in outcomes:
        key = o.spec.arm.key
        out[f"gold_{key}"] = o.final_gold
        out[f"peak_gold_{key}"] = o.peak_gold
        out[f"kl_{key}"] = o.final_kl
        out[f"length_{key}"] = o.final_length
    for label, fit in fits.items():
        out.update({f"fit_{label.lower()}_{k}": float(getattr(fit, k)) for k in ("alpha", "beta_s", "r2")})
    return out


def make_claims(outcomes: Sequence[RunOutcome], seed_fits: Mapping[str, list[LawFit]], epochs: int):
    """The claims from the runs' humps and the per-seed fits (DPO's, or the one objective trained)."""
    low = min(o.spec.beta for o in outcomes)
    at_low = [o for o in outcomes if o.spec.beta == low]
    label = "DPO" if "DPO" in seed_fits else next(iter(seed_fits))
    fits = seed_fits[label]
    return [
        overoptimization_claim({o.spec.objective: [h.drop for h in o.humps] for o in at_low}, low),
        kl_growth_claim({o.spec.objective: [h.kl_growth for h in o.humps] for o in at_low}, low),
        scaling_law_claim([f.r2 for f in fits], label, fits=fits),
        hump_shape_claim([f.beta_s for f in fits], label),
        intra_epoch_claim({o.spec.objective: [h.peak_epoch for h in o.humps] for o in at_low}, low),
        any_run_peaks_claim({o.spec.arm.label: o.humps for o in outcomes}, epochs),
    ]


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    runs = make_runs(p.objective, parse_betas(p.betas))
    names = [r.arm.label for r in runs]
    seeds = ctx.seeds(p.n_seeds)
    problems = [make_problem(s, p.n_prompts, p.n_candidates, p.n_pairs, p.gold_peak) for s in seeds]
    data = stack_problems(problems, p.head, ctx.device)
    params = init_head(p.head, len(runs), seeds, data["x"].shape[-1], p.hidden)
    params = {k: v.to(ctx.device) for k, v in params.items()}
    per_epoch = steps_per_epoch(data["mask"], p.batch_size)
    steps = checkpoints(per_epoch * p.epochs, per_epoch, p.log_every)
    epochs_at = [s / per_epoch for s in steps]
    bar = ctx.bar(per_epoch * p.epochs, f"{len(runs)} runs × {len(seeds)} seeds")

    def on_step(step, losses, weights):
        check_arms(losses, step, names, weights=weights)
        bar.update(1)

    def on_log(step, m):
        for a, name in enumerate(names):
            for s, seed in enumerate(seeds):
                for metric in METRICS:
                    ctx.history.log(step, name, metric, m[metric][a, s], seed=seed)

    series, final_logp = train_daa(
        data,
        [r.kind for r in runs],
        [r.beta for r in runs],
        params,
        lr=p.lr,
        epochs=p.epochs,
        batch_size=p.batch_size,
        log_steps=steps,
        gens=[torch.Generator().manual_seed(s + ORDER_SEED_OFFSET) for s in seeds],
        on_step=on_step,
        on_log=on_log,
    )
    bar.close()
    gold_ref = series["gold_reward"][0, 0]  # (S,): every run starts at π_ref
    outcomes = [
        RunOutcome(
            spec=r,
            humps=[hump(series["gold_reward"][:, a, s], series["kl"][:, a, s], epochs_at) for s in range(len(seeds))],
            curves={m: series[m][:, a].mean(-1).tolist() for m in METRICS},
            final_gold=float(series["gold_reward"][-1, a].mean()),
            final_kl=float(series["kl"][-1, a].mean()),
            final_length=float(series["mean_length"][-1, a].mean()),
        )
        for a, r in enumerate(runs)
    ]
    kinds = list(dict.fromkeys(r.kind for r in runs))
    seed_fits = {LABELS[k]: fit_per_seed(series, runs, k) for k in kinds}
    gain = series["gold_reward"] - gold_ref
    pooled = {
        LABELS[k]: fit_scaling_law(
            series["sqrt_kl"][:, [a for a, r in enumerate(runs) if r.kind == k]],
            gain[:, [a for a, r in enumerate(runs) if r.kind == k]],
        )
        for k in kinds
    }
    extras = {
        "runs": outcomes,
        "seeds": seeds,
        "steps": steps,
        "steps_per_epoch": per_epoch,
        "epochs_at": epochs_at,
        "gold_reference": gold_ref.tolist(),
        "fits": pooled,
        "seed_fits": seed_fits,
        "pairs_kept": data["mask"].sum(-1).tolist(),
        "prompt0": {
            "length": data["length"][0, 0].cpu().tolist(),
            "quality": problems[0][0].quality[0].tolist(),
            "gold": data["gold"][0, 0].cpu().tolist(),
            "probs": {
                "π_ref": data["ref_logp"][0, 0].exp().cpu().tolist(),
                **{n: final_logp[a, 0, 0].exp().cpu().tolist() for a, n in enumerate(names)},
            },
        },
    }
    metrics = final_metrics(outcomes, float(gold_ref.mean()), pooled)
    return Outcome(metrics=metrics, claims=make_claims(outcomes, seed_fits, p.epochs), extras=extras)

"""SSL recsys's experiment: the typed knobs, the long-tailed catalogue per seed, the supervised-only two-tower baseline
and the +SSL arms (CFM, and RFM when asked), recall@k overall and by popularity bucket, the claims, run().

Every arm trains on the same catalogue, users and logged pairs (one problem per seed, :mod:`labkit.substrates.recsys`);
all (arm, seed) models are trained together as one stacked model (their summed loss separates). The recall curve
logged during training is on the validation pairs. The test pairs are scored with the last weights (the headline: a
fixed number of steps, no model selection) and with each model's weights at its best validation recall (early stopping,
selected on the validation pairs only).

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, check_arms, knob, method_run, params_of
from labkit.substrates import recsys as rs
from labkit.substrates.ranking import recall_at_k

from .figures import make_figures
from .method import cfm_mask_table, mutual_information_matrix, pair_scores, train_two_towers


@dataclass(frozen=True)
class Knobs:
    alpha: float = knob(1.0, low=0.0, high=100.0, help="SSL weight α in L = L_main + α·L_self")
    tau_ssl: float = knob(0.1, low=0.01, high=10.0, log=True, help="temperature τ of the SSL contrastive loss")
    masking: str = knob("cfm", choices=("cfm", "rfm"), help="masking of the SSL arm: correlated (CFM) or random (RFM)")
    train_fraction: float = knob(1.0, low=0.05, high=1.0, help="share of the logged training pairs used")
    user_id: bool = knob(
        False, main=False, help="give the query tower the user ID too (by default it sees the user's features only)"
    )
    compare_masking: bool = knob(
        False, standard=True, full=True, main=False, help="also train the other masking scheme (CFM vs RFM)"
    )
    n_items: int = knob(1000, standard=2000, full=10_000, low=20, high=200_000, main=False, help="catalogue size K")
    n_users: int = knob(1500, standard=3000, full=15_000, low=10, high=200_000, main=False, help="users U")
    n_train: int = knob(
        10_000, standard=20_000, full=100_000, low=100, high=10_000_000, main=False, help="logged training pairs"
    )
    n_val: int = knob(1000, standard=2500, full=10_000, low=10, high=1_000_000, main=False, help="validation pairs")
    n_test: int = knob(2500, standard=5000, full=10_000, low=10, high=1_000_000, main=False, help="test pairs")
    zipf: float = knob(1.1, low=0.0, high=3.0, main=False, help="Zipf exponent of item popularity")
    n_seeds: int = knob(3, full=5, low=1, high=100, main=False, help="independent problems (new catalogue and log)")
    n_steps: int = knob(1000, standard=1500, full=5000, low=1, high=1_000_000, main=False, help="Adam steps")
    batch_size: int = knob(128, standard=256, full=1024, low=2, high=65_536, main=False, help="main batch size B")
    ssl_batch_size: int = knob(128, standard=256, full=1024, low=2, high=65_536, main=False, help="SSL batch size N")
    lr: float = knob(3e-3, low=1e-5, high=1.0, log=True, main=False, help="Adam learning rate")
    tau_main: float = knob(0.05, low=0.01, high=10.0, log=True, main=False, help="temperature τ_m of the main loss")
    emb_dim: int = knob(16, full=32, low=1, high=512, main=False, help="embedding size of each field")
    hidden: int = knob(64, full=128, low=1, high=4096, main=False, help="hidden width of each tower's MLP")
    k: int = knob(50, low=1, high=10_000, main=False, help="recall@k cut-off (the headline's)")
    log_every: int = knob(
        50,
        standard=100,
        full=250,
        low=1,
        high=1_000_000,
        main=False,
        help="log the losses and validation recall (the early-stopping candidates)",
    )

    def __post_init__(self):
        if self.k > self.n_items:
            raise ValueError(f"k={self.k} must be at most n_items={self.n_items}")
        used = int(self.train_fraction * self.n_train)
        if self.batch_size > used:
            raise ValueError(
                f"batch_size={self.batch_size} exceeds the training pairs used (train_fraction·n_train = {used})"
            )
        if self.ssl_batch_size > self.n_items:
            raise ValueError(f"ssl_batch_size={self.ssl_batch_size} exceeds n_items={self.n_items}")


PARAMS = params_of(Knobs)
MAIN_METRIC = "val_recall"

#: the headline's margin (the card's claim 1): +SSL overall recall@k ≥ the baseline's + 0.015, per seed
RECALL_MARGIN = 0.015
#: the second claim's margin: relative gain on mid-frequency items − relative gain on head items ≥ 0
BUCKET_MARGIN = 0.0
#: popularity buckets by training frequency (the card's): tail ≤ 3, mid 4–30, head > 30 interactions
TAIL_MAX, HEAD_MIN = 3, 31
BUCKETS = ("tail", "mid", "head")
#: the cut-offs of the recall@K curve (those ≤ n_items)
CURVE_KS = (5, 10, 20, 50, 100, 200, 500)
#: decimals printed for the claims (recall differences of a few 0.01 over a few thousand test pairs)
DECIMALS = 3


# --- arms and typed records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSpec:
    """One arm: its record key and label, the SSL weight (0 = supervised only) and the masking scheme."""

    arm: Arm
    alpha: float
    masking: str


def make_arms(alpha: float, masking: str, compare_masking: bool) -> list[ArmSpec]:
    """The supervised-only two-tower, +SSL with ``masking``, and (``compare_masking``) +SSL with the other one."""
    arms = [ArmSpec(Arm("baseline", "two-tower"), 0.0, masking)]
    others = [masking] + ([m for m in ("cfm", "rfm") if m != masking] if compare_masking else [])
    arms += [ArmSpec(Arm(m, f"+SSL {m.upper()} α={alpha:g}"), alpha, m) for m in others]
    return arms


@dataclass(frozen=True)
class ArmOutcome:
    """One arm's test numbers, one value per seed (seed order of the run)."""

    arm: Arm
    recall: tuple[float, ...]  # recall@k over all test pairs
    tail: tuple[float, ...]  # recall@k over the test pairs whose item is a tail item (train count ≤ 3)
    mid: tuple[float, ...]
    head: tuple[float, ...]
    curve: tuple[tuple[float, ...], ...]  # recall@K for each K of the curve, per seed: (seeds, len(ks))
    steps: tuple[int, ...]  # the training step of the weights scored (the best on validation, or the last)
    tail_purity: tuple[float, ...]  # share of tail items whose nearest tail item (cosine) has the same category
    tail_pca: tuple[tuple[float, float], ...]  # seed 0: 2-D PCA of the tail items' embeddings


@dataclass(frozen=True)
class DataSummary:
    """What the figures show about the first seed's problem, and the bucket sizes of every seed."""

    train_counts_seed0: tuple[int, ...]
    tail_categories_seed0: tuple[int, ...]
    mi_seed0: tuple[tuple[float, ...], ...]
    cfm_table_seed0: tuple[tuple[bool, ...], ...]
    fields: tuple[str, ...]
    bucket_items: tuple[tuple[int, int, int], ...]  # per seed: tail, mid, head item counts
    bucket_pairs: tuple[tuple[int, int, int], ...]  # per seed: test pairs whose item is tail / mid / head
    curve_ks: tuple[int, ...]


# --- the claims (pure functions of per-seed numbers) ------------------------------------------------------------


def recall_gain_claim(ssl, baseline, k: int, label: str, margin: float = RECALL_MARGIN) -> ClaimCheck:
    """Headline: adding the SSL task improves overall recall@k over the supervised-only two-tower by ≥ ``margin``."""
    check = ClaimCheck.paired(
        f"adding the contrastive item-feature task ({label}) improves retrieval recall@{k} over the two-tower",
        f"recall@{k} over all test pairs, +SSL − two-tower, per seed",
        ssl,
        baseline,
        labels=(label, "two-tower"),
        margin=margin,
        headline=True,
        decimals=DECIMALS,
    )
    check.detail = _diverged(check.values)
    return check


def early_stopped_claim(ssl, baseline, k: int, label: str, margin: float = 0.0) -> ClaimCheck:
    """Supporting: the gain survives when both arms are early-stopped on the validation pairs (the paper compares
    SSL with regularised baselines; early stopping is the simplest regulariser). Margin 0: "better than"."""
    check = ClaimCheck.paired(
        f"{label} still improves recall@{k} when both arms are early-stopped on the validation pairs",
        f"recall@{k} over all test pairs at each model's best validation step, +SSL − two-tower, per seed",
        ssl,
        baseline,
        labels=(f"{label} (early-stopped)", "two-tower (early-stopped)"),
        margin=margin,
        decimals=DECIMALS,
    )
    check.detail = _diverged(check.values)
    return check


def relative_gain(ssl, baseline) -> np.ndarray:
    """Per seed: recall(+SSL) / recall(two-tower) − 1 (NaN where the baseline's recall is 0)."""
    ssl, baseline = np.asarray(ssl, float), np.asarray(baseline, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(baseline > 0, ssl / baseline - 1.0, np.nan)


def bucket_gain_claim(ssl: ArmOutcome, baseline: ArmOutcome, k: int, margin: float = BUCKET_MARGIN) -> ClaimCheck:
    """Supporting: the relative gain is larger for rarely seen items (mid bucket) than for popular ones (head)."""
    mid, head = relative_gain(ssl.mid, baseline.mid), relative_gain(ssl.head, baseline.head)
    tail = relative_gain(ssl.tail, baseline.tail)
    values = mid - head
    return ClaimCheck(
        claim=f"the relative recall@{k} gain of {ssl.arm.label} is larger on rarely seen items than on popular ones",
        quantity="relative gain on mid items (4–30 training interactions) − on head items (> 30), per seed",
        values=values,
        margin=margin,
        numbers={
            "gain mid": float(np.mean(mid)),
            "gain head": float(np.mean(head)),
            "gain tail (printed, not asserted)": float(np.nanmean(tail)) if np.isfinite(tail).any() else float("nan"),
        },
        detail=_diverged(values),
        decimals=DECIMALS,
    )


def _diverged(values) -> str:
    bad = not np.isfinite(np.asarray(values, float)).all()
    return (
        "a recall or gain is not finite (an empty bucket or a diverged arm): the verdict is inconclusive" if bad else ""
    )


# --- data, evaluation -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One seed's data as tensors for the stacked trainer, plus the numpy pieces the evaluation needs."""

    data: rs.RecsysData
    train: np.ndarray  # the training pairs used (after train_fraction)
    counts: np.ndarray  # (K,) training count of each item
    mi: np.ndarray  # (F, F) on the item table
    cfm_table: torch.Tensor  # (F, F) bool


def make_problem(p: Knobs, seed: int) -> Problem:
    data = rs.make_recsys_data(seed, p.n_items, p.n_users, p.n_train, p.n_val, p.n_test, zipf=p.zipf)
    train = data.interactions.train[: max(p.batch_size, int(p.train_fraction * p.n_train))]
    counts = np.bincount(train[:, 1], minlength=p.n_items)
    mi = mutual_information_matrix(data.catalogue.features)
    return Problem(data, train, counts, mi, cfm_mask_table(mi))


def hits_at_k(scores: torch.Tensor, items: np.ndarray, k: int) -> np.ndarray:
    """Recall@k of each test pair (its item in the user's top k of the catalogue: 1 or 0), ``(P,)``."""
    relevant = torch.zeros_like(scores, dtype=torch.bool)
    relevant[torch.arange(len(items)), torch.as_tensor(items)] = True
    return recall_at_k(scores, relevant, k).numpy()


def item_ranks(scores: torch.Tensor, items: np.ndarray) -> np.ndarray:
    """0-based rank of each test pair's item in its user's ranking of the catalogue, ``(P,)``, without a sort: the
    number of items scored higher, plus those scored equal with a lower index (the stable order of
    :func:`labkit.substrates.ranking.ranking`)."""
    index = torch.as_tensor(items).view(-1, 1)
    own = scores.gather(1, index)  # (P, 1)
    lower = torch.arange(scores.shape[1]).view(1, -1) < index
    return ((scores > own) | ((scores == own) & lower)).sum(1).numpy()


def neighbour_purity(emb: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose nearest other row (largest inner product of the unit embeddings) has the same label."""
    if len(emb) < 2:
        return float("nan")
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    return float((labels[sim.argmax(1)] == labels).mean())


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of the rows of ``x``."""
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


# --- the experiment -------------------------------------------------------------------------------------------


@method_run(Knobs, figures=make_figures)
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    problems = [make_problem(p, s) for s in seeds]
    specs = make_arms(p.alpha, p.masking, p.compare_masking)
    n_arms, n_seeds = len(specs), len(seeds)
    names = [f"{a.arm.label} seed {s}" for a in specs for s in seeds]  # model m = arm·S + seed

    def stack(fn, dtype=None):
        return torch.stack([torch.as_tensor(fn(pr), dtype=dtype) for _ in specs for pr in problems]).to(ctx.device)

    items = stack(lambda pr: pr.data.catalogue.features)
    user_fields = slice(0 if p.user_id else 1, None)  # the query tower's fields (the user ID or not)
    users = stack(lambda pr: pr.data.users.features[:, user_fields])
    train = stack(lambda pr: pr.train)
    val = stack(lambda pr: pr.data.interactions.val)
    log_q = stack(lambda pr: rs.log_sampling_probability(pr.counts), torch.float32)
    cfm = stack(lambda pr: pr.cfm_table)
    alphas = torch.tensor([a.alpha for a in specs for _ in seeds], device=ctx.device)
    use_cfm = torch.tensor([a.masking == "cfm" for a in specs for _ in seeds], device=ctx.device)
    generator = torch.Generator().manual_seed(ctx.seed)
    data0 = problems[0].data
    model = rs.TwoTower(
        data0.users.cardinalities[user_fields],
        data0.catalogue.cardinalities,
        len(names),
        p.emb_dim,
        p.hidden,
        32,
        generator,
    )
    with torch.no_grad():  # every arm of a seed starts from the same weights (a paired comparison)
        for t in model.parameters():
            t.copy_(t[:n_seeds].repeat(n_arms, *[1] * (t.dim() - 1)))
    model = model.to(ctx.device)
    bar = ctx.bar(p.n_steps, f"two-tower ± SSL, {n_arms} arms × {n_seeds} seeds")

    best = torch.full((len(names),), -1.0)  # best validation recall@k of each model so far
    best_step = [0] * len(names)
    best_weights = [t.detach().clone() for t in model.parameters()]  # (M, ...) each: model m's slice at its best

    def log_validation(step, main, self_sup):
        for a, spec in enumerate(specs):
            for s, seed in enumerate(seeds):
                m = a * n_seeds + s
                ranks = item_ranks(pair_scores(model, items, users, val, m).cpu(), val[m, :, 1].cpu().numpy())
                recall = float((ranks < p.k).mean())
                ctx.history.log(step, spec.arm.label, "val_recall", recall, seed=seed)
                ctx.history.log(step, spec.arm.label, "loss_main", float(main[m]), seed=seed)
                if spec.alpha > 0:
                    ctx.history.log(step, spec.arm.label, "loss_ssl", float(self_sup[m]), seed=seed)
                if recall > best[m]:
                    best[m], best_step[m] = recall, step
                    with torch.no_grad():
                        for keep, t in zip(best_weights, model.parameters()):
                            keep[m] = t[m]

    def on_step(step, loss, main, self_sup):
        bar.update(1)
        logged = step % p.log_every == 0 or step == p.n_steps
        # every step: each model's loss is finite; at logged steps also its weights (NaN/inf or beyond 1e6)
        check_arms(loss, step, names, weights=list(model.parameters()) if logged else ())
        if logged:
            log_validation(step, main, self_sup)

    train_two_towers(
        model,
        items,
        users,
        train,
        log_q,
        cfm,
        alphas,
        use_cfm,
        n_steps=p.n_steps,
        batch_size=p.batch_size,
        ssl_batch_size=p.ssl_batch_size,
        tau_main=p.tau_main,
        tau_ssl=p.tau_ssl,
        lr=p.lr,
        generator=generator,
        problem=torch.arange(n_seeds, device=ctx.device).repeat(n_arms),
        on_step=on_step,
    )
    bar.close()
    ctx.check_weights(model, p.n_steps, "two-tower (all arms and seeds)")
    # the headline protocol (the card's): a fixed number of steps, the last weights, no model selection
    outcomes = evaluate(model, specs, problems, items, users, p, [p.n_steps] * len(names))
    # early stopping, selected on the validation pairs only: each model's weights at its best validation recall@k
    with torch.no_grad():
        for keep, t in zip(best_weights, model.parameters()):
            t.copy_(keep)
    stopped = evaluate(model, specs, problems, items, users, p, best_step)
    base, ssl = outcomes[0], outcomes[1]
    claims = [
        recall_gain_claim(ssl.recall, base.recall, p.k, ssl.arm.label),
        bucket_gain_claim(ssl, base, p.k),
        early_stopped_claim(stopped[1].recall, stopped[0].recall, p.k, ssl.arm.label),
    ]
    extras = {"arms": outcomes, "early_stopped": stopped, "data": summarise(problems, p), "seeds": list(seeds)}
    return Outcome(metrics=final_metrics(outcomes, stopped), claims=claims, extras=extras)


def evaluate(model, specs, problems, items, users, p: Knobs, steps: list[int]) -> list[ArmOutcome]:
    """Every arm's test recall@k, overall and per popularity bucket, its recall@K curve, and seed 0's tail PCA."""
    ks = [k for k in CURVE_KS if k <= p.n_items]
    test = torch.stack([torch.as_tensor(pr.data.interactions.test) for _ in specs for pr in problems]).to(items.device)
    outcomes = []
    for a, spec in enumerate(specs):
        per_seed = {"recall": [], "tail": [], "mid": [], "head": [], "curve": [], "purity": []}
        for s, pr in enumerate(problems):
            m = a * len(problems) + s
            scores = pair_scores(model, items, users, test, m).cpu()
            test_items = pr.data.interactions.test[:, 1]
            hits = hits_at_k(scores, test_items, p.k)
            bucket = rs.frequency_buckets(pr.counts, TAIL_MAX, HEAD_MIN)[test_items]
            per_seed["recall"].append(float(hits.mean()))
            for b, name in enumerate(BUCKETS):
                per_seed[name].append(float(hits[bucket == b].mean()) if (bucket == b).any() else float("nan"))
            ranks = item_ranks(scores, test_items)
            per_seed["curve"].append(tuple(float((ranks < k).mean()) for k in ks))
            with torch.no_grad():
                emb = model.item(items[m : m + 1], models=torch.tensor([m], device=items.device))[0].cpu().numpy()
            tail = rs.frequency_buckets(pr.counts, TAIL_MAX, HEAD_MIN) == 0
            per_seed["purity"].append(neighbour_purity(emb[tail], pr.data.catalogue.features[tail, 1]))
            if s == 0:
                coords = pca_2d(emb[tail]) if tail.sum() >= 2 else np.zeros((0, 2))
        outcomes.append(
            ArmOutcome(
                spec.arm,
                *(tuple(per_seed[n]) for n in ("recall", "tail", "mid", "head")),
                curve=tuple(per_seed["curve"]),
                steps=tuple(steps[a * len(problems) : (a + 1) * len(problems)]),
                tail_purity=tuple(per_seed["purity"]),
                tail_pca=tuple(map(tuple, coords.tolist())),
            )
        )
    return outcomes


def summarise(problems: list[Problem], p: Knobs) -> DataSummary:
    first = problems[0]
    tail = rs.frequency_buckets(first.counts, TAIL_MAX, HEAD_MIN) == 0
    bucket_items, bucket_pairs = [], []
    for pr in problems:
        bucket = rs.frequency_buckets(pr.counts, TAIL_MAX, HEAD_MIN)
        bucket_items.append(tuple(int((bucket == b).sum()) for b in range(3)))
        test_bucket = bucket[pr.data.interactions.test[:, 1]]
        bucket_pairs.append(tuple(int((test_bucket == b).sum()) for b in range(3)))
    return DataSummary(
        train_counts_seed0=tuple(first.counts.tolist()),
        tail_categories_seed0=tuple(first.data.catalogue.features[tail, 1].tolist()),
        mi_seed0=tuple(map(tuple, first.mi.tolist())),
        cfm_table_seed0=tuple(map(tuple, first.cfm_table.tolist())),
        fields=rs.ITEM_FIELDS,
        bucket_items=tuple(bucket_items),
        bucket_pairs=tuple(bucket_pairs),
        curve_ks=tuple(k for k in CURVE_KS if k <= p.n_items),
    )


def final_metrics(outcomes: list[ArmOutcome], stopped: list[ArmOutcome]) -> dict[str, float]:
    """Means over seeds: recall@k overall and per bucket, per arm; the gains of the first +SSL arm; the same overall
    numbers for the early-stopped weights (``_es``)."""
    out = {}
    for o in outcomes:
        for name in ("recall", *BUCKETS):
            out[f"{name}_{o.arm.key}"] = float(np.nanmean(getattr(o, name)))
    for o in stopped:
        out[f"recall_{o.arm.key}_es"] = float(np.mean(o.recall))
        out[f"best_step_{o.arm.key}"] = float(np.mean(o.steps))
    for o in outcomes:
        out[f"tail_purity_{o.arm.key}"] = float(np.nanmean(o.tail_purity))
    base, ssl = outcomes[0], outcomes[1]
    out["recall_gain"] = out[f"recall_{ssl.arm.key}"] - out["recall_baseline"]
    out["recall_gain_es"] = out[f"recall_{ssl.arm.key}_es"] - out["recall_baseline_es"]
    for name in BUCKETS:
        gain = relative_gain(getattr(ssl, name), getattr(base, name))
        out[f"relative_gain_{name}"] = float(np.nanmean(gain)) if np.isfinite(gain).any() else float("nan")
    return out

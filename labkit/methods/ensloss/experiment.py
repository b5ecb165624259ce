"""EnsLoss at teaching scale: the knobs, the tasks, the arms (fixed losses and EnsLoss), the claims and ``run``.

On divergence an arm is MARKED, not the run stopped: a loss that becomes NaN/inf (or weights that run past
``WEIGHT_LIMIT``) ends that arm at that epoch; its accuracies are NaN, ``diverged_runs_<arm>`` counts it, the
figures show its curve ending there and every claim that needs it is inconclusive and says which seeds diverged.
The paper is about which loss trains well, and a loss whose SGD blows up (the exponential loss at a large step
size) is part of that answer. Only when every arm diverged on every seed is there nothing to compare: then the
run stops with ``DivergenceError`` and nothing is recorded.

Every arm trains the same network from the same initialisation on the same batches with the same schedule; only
the loss differs. The training split keeps a validation part, used for one thing only: choosing the epoch at
which to read an early-stopped test accuracy (never the test set).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labkit.core import (
    WEIGHT_LIMIT,
    Arm,
    ClaimCheck,
    DivergenceError,
    Outcome,
    RunContext,
    accuracy,
    knob,
    method_run,
    params_of,
)
from labkit.data import tabular
from labkit.models import MLP

from .figures import make_figures
from .method import ENSLOSS, EpochStats, ensloss_derivatives, implied_loss, sgd_epoch

LOSS_SETS = ("bce,hinge,ensloss", "bce,hinge,exponential,focal,ensloss")
LABELS = {"bce": "BCE", "hinge": "hinge", "exponential": "exponential", "focal": "focal", ENSLOSS: "EnsLoss"}
#: the baseline of the headline claim: the standard loss, the one the paper compares with first
HEADLINE_BASELINE = "bce"
#: the task every claim is checked on (the paper's simulator); the others are reported per task
CLAIM_TASK = "sim"

#: share of the training split held out as validation (to choose the early-stopping epoch)
VAL_FRACTION = 0.2
#: seed offset of the derivative draws' generator (so draws and batch order are independent streams)
DRAW_STREAM = 7919
#: seed offset of the generator for the extra derivative draws shown in the figure
FIGURE_DRAW_STREAM = 104729
#: seed offset of the label flips on the validation part (the training part uses the seed itself)
VAL_FLIP_STREAM = 1
#: the derivative figure shows the first batch of this fraction of the epochs (margins on both sides of 0 and 1)
SNAP_FRACTION = 20
#: digits images are 8×8 and the paper's CNNs see 32×32: bilinear upsampling to this side
IMAGE_SIDE = 32
#: paired t-test level of the paper's "better / tie / worse" count per task
PAIRED_ALPHA = 0.05
#: printed decimals of the claims (points of accuracy); chosen from benchmarks/spread/ensloss.json
CLAIM_DECIMALS = 1

MAIN_METRIC = "test_acc"


@dataclass(frozen=True)
class Knobs:
    """EnsLoss's knobs; ``Knobs()`` is the quick preset."""

    lr: float = knob(1e-2, low=1e-5, high=1.0, log=True, help="SGD learning rate (cosine-decayed to 0)")
    epochs: int = knob(60, standard=60, full=100, low=1, high=1000, help="training epochs per arm")
    n_seeds: int = knob(
        3,
        standard=10,
        full=5,
        low=1,
        high=50,
        help="repeats (seed, seed+1, …): new data draw, split, init and batch order; arms share them",
    )
    boxcox_lambda: float = knob(
        0.0, low=-1.0, high=1.0, help="Box-Cox λ of the derivative family: 0 → −g is log-normal"
    )
    clip: float = knob(-1.0, low=-10.0, high=-0.01, help="lower bound on a drawn derivative")
    width: int = knob(256, full=1024, low=2, high=4096, help="hidden units per MLP layer")
    depth: int = knob(3, low=1, high=8, help="hidden layers of the MLP (ReLU + BatchNorm)")
    signal_scale: float = knob(
        2.0,
        low=0.1,
        high=20.0,
        log=True,
        help="×score before the sigmoid in the simulator: smaller = noisier labels (2 → Bayes acc ≈ 0.8)",
    )
    n: int = knob(
        1500,
        full=5000,
        low=100,
        high=200_000,
        help="simulator samples (70% train, of which 20% validation; 30% test)",
    )
    d: int = knob(100, low=1, high=10_000, main=False, help="simulator features")
    batch_size: int = knob(
        128,
        low=2,
        high=4096,
        main=False,
        help="batch size (capped at n_train // 4 on small sets); the last incomplete batch is dropped",
    )
    weight_decay: float = knob(5e-6, low=0.0, high=0.1, main=False, help="SGD weight decay")
    momentum: float = knob(0.9, low=0.0, high=0.99, main=False, help="SGD momentum")
    losses: str = knob(
        LOSS_SETS[0],
        standard=LOSS_SETS[1],
        full=LOSS_SETS[1],
        choices=LOSS_SETS,
        main=False,
        help="arms trained side by side",
    )
    n_large: int = knob(
        0,
        standard=5000,
        full=0,
        low=0,
        high=200_000,
        main=False,
        help="a second simulator task with this many samples (0 = none)",
    )
    breast_cancer: bool = knob(
        False,
        standard=True,
        full=True,
        main=False,
        help="also scikit-learn's breast-cancer set with `flip` of its training labels flipped",
    )
    flip: float = knob(
        0.2,
        low=0.0,
        high=0.5,
        main=False,
        help="fraction of training labels flipped on breast-cancer and digits tasks (test labels stay clean)",
    )
    digits_pairs: int = knob(
        0,
        standard=0,
        full=9,
        low=0,
        high=45,
        main=False,
        help="digits class pairs (of 45, evenly spread), 8×8 upsampled to 32×32, small CNN",
    )


PARAMS = params_of(Knobs)


def arms_of(losses: str) -> list[Arm]:
    """The arms of a ``losses`` choice, in order (EnsLoss last)."""
    return [Arm(key, LABELS[key]) for key in losses.split(",")]


# --- tasks -----------------------------------------------------------------------------------------------------


@dataclass
class Task:
    """One binary task on the run's device: features and y ∈ {0, 1} (float) for train / validation / test."""

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    make_model: Callable[[], nn.Module]


def small_cnn(channels: int = 16) -> nn.Module:
    """conv3×3-BN-ReLU-pool ×2, conv3×3-BN-ReLU, global average pool, linear → one logit (1×32×32 input)."""
    c = channels

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, c),
        nn.MaxPool2d(2),
        *block(c, 2 * c),
        nn.MaxPool2d(2),
        *block(2 * c, 4 * c),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * c, 1),
    )


def to_task(name: str, split: tabular.Split, device, make_model, image_shape=None) -> Task:
    """A :class:`Task` from a NumPy split; ``image_shape`` (h, w) reshapes rows to 1×h×w, upsampled to 32×32."""

    def features(a):
        t = torch.as_tensor(a, device=device)
        if image_shape is not None:
            t = F.interpolate(
                t.reshape(-1, 1, *image_shape), size=(IMAGE_SIDE, IMAGE_SIDE), mode="bilinear", align_corners=False
            )
        return t

    def labels(a):
        return torch.as_tensor(a, device=device, dtype=torch.float32)

    return Task(
        name,
        features(split.X_train),
        labels(split.y_train),
        features(split.X_val),
        labels(split.y_val),
        features(split.X_test),
        labels(split.y_test),
        make_model,
    )


def mlp_factory(d: int, *, width: int, depth: int) -> Callable[[], nn.Module]:
    return lambda: MLP(d, [width] * depth, 1, batch_norm=True)


def flipped(split: tabular.Split, rate: float, seed: int) -> tabular.Split:
    """The split with ``rate`` of its training and validation labels flipped (test labels stay clean)."""
    return dataclasses.replace(
        split,
        y_train=tabular.flip_labels(split.y_train, rate, seed),
        y_val=tabular.flip_labels(split.y_val, rate, seed + VAL_FLIP_STREAM),
    )


def build_tasks(p: Knobs, seed: int, device) -> list[Task]:
    """The run's tasks for one seed: the simulator (always), then the optional extra tasks."""
    mlp = dict(width=p.width, depth=p.depth)
    tasks = []
    for name, n in [(CLAIM_TASK, p.n)] + ([(f"sim n={p.n_large}", p.n_large)] if p.n_large else []):
        X, y, _ = tabular.relu_sum_classification(n, p.d, seed=seed, scale=p.signal_scale)
        split = tabular.standardize_split(X, y, seed=seed, val_size=VAL_FRACTION)
        tasks.append(to_task(name, split, device, mlp_factory(p.d, **mlp)))
    if p.breast_cancer:
        split = flipped(
            tabular.standardize_split(*tabular.breast_cancer(), seed=seed, val_size=VAL_FRACTION), p.flip, seed
        )
        tasks.append(to_task("breast_cancer", split, device, mlp_factory(split.X_train.shape[1], **mlp)))
    pairs = tabular.digit_pairs()
    for k in np.linspace(0, len(pairs) - 1, p.digits_pairs).round().astype(int) if p.digits_pairs else []:
        a, b = pairs[k]
        X, y = tabular.digits_pair(a, b)
        split = tabular.standardize_split(X.reshape(len(X), -1), y, seed=seed, val_size=VAL_FRACTION)
        tasks.append(to_task(f"digits {a}v{b}", flipped(split, p.flip, seed), device, small_cnn, image_shape=(8, 8)))
    return tasks


# --- training one arm ------------------------------------------------------------------------------------------


class TwoClassLogits(nn.Module):
    """A one-logit binary model as two-class logits (0, f(x)), so argmax = 1[f(x) > 0] (for labkit's accuracy)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model(x)
        return torch.cat([torch.zeros_like(f), f], dim=-1)


@torch.no_grad()
def test_auc(model: nn.Module, task: Task) -> float:
    """ROC AUC of the test logits (scikit-learn); NaN when the scores are not finite."""
    from sklearn.metrics import roc_auc_score

    model.eval()
    scores = model(task.X_test).squeeze(-1).cpu().numpy()
    return float(roc_auc_score(task.y_test.cpu().numpy(), scores)) if np.isfinite(scores).all() else float("nan")


@dataclass
class ArmRun:
    """One arm on one task and seed. A diverged arm (non-finite loss) has NaN accuracies and says when it stopped."""

    task: str
    arm: str
    seed: int
    final_test_acc: float
    early_stop_test_acc: float  # test accuracy at the epoch with the best VALIDATION accuracy
    early_stop_epoch: int
    final_train_acc: float
    test_auc: float
    diverged_epoch: int | None = None
    diverged_step: int | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_epoch is not None


def weights_ran_off(model: nn.Module) -> bool:
    """A weight NaN/inf or beyond ``WEIGHT_LIMIT``: a finite mess, marked diverged like a non-finite loss."""
    with torch.no_grad():
        largest = max(float(w.abs().max()) for w in model.parameters())
    return not math.isfinite(largest) or largest > WEIGHT_LIMIT


def train_arm(
    ctx: RunContext,
    task: Task,
    arm: Arm,
    seed: int,
    series: str,
    *,
    lr: float,
    epochs: int,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    boxcox_lambda: float,
    clip: float,
    bar=None,
    snap_epoch: int = 0,
) -> tuple[ArmRun, tuple[np.ndarray, np.ndarray] | None]:
    """Train one arm with SGD + cosine schedule; log train / validation / test accuracy each epoch.

    Model init and batch order depend only on ``seed`` (shared across arms). A non-finite loss stops the arm and
    marks it diverged (its accuracies NaN). Also returns the first batch's (margins, EnsLoss derivatives) of
    epoch ``snap_epoch`` (None if 0 or a fixed loss)."""
    torch.manual_seed(seed)
    model = task.make_model().to(ctx.device)
    scored = TwoClassLogits(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    order, draws = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + DRAW_STREAM)
    batch = max(2, min(batch_size, len(task.y_train) // 4))
    val_curve, test_curve, steps, snapshot = [], [], 0, None
    for epoch in range(1, epochs + 1):
        stats: EpochStats = sgd_epoch(
            model,
            opt,
            task.X_train,
            task.y_train,
            loss=arm.key,
            batch_size=batch,
            order=order,
            draws=draws,
            boxcox_lambda=boxcox_lambda,
            clip=clip,
        )
        if epoch == snap_epoch:
            snapshot = stats.first_draw
        if stats.diverged or weights_ran_off(model):
            if bar is not None:
                bar.update(epochs - epoch + 1)
            nan = float("nan")
            run = ArmRun(task.name, arm.key, seed, nan, nan, 0, nan, nan, epoch, steps + stats.steps + 1)
            return run, snapshot
        steps += stats.steps
        val_curve.append(accuracy(scored, task.X_val, task.y_val))
        test_curve.append(accuracy(scored, task.X_test, task.y_test))
        ctx.history.log_many(
            epoch,
            series,
            {"train_acc": stats.train_acc, "val_acc": val_curve[-1], "test_acc": test_curve[-1]},
            seed=seed,
        )
        if bar is not None:
            bar.update(1)
        sched.step()
    chosen = int(np.argmax(val_curve))  # the first epoch with the best validation accuracy
    run = ArmRun(
        task.name,
        arm.key,
        seed,
        final_test_acc=test_curve[-1],
        early_stop_test_acc=test_curve[chosen],
        early_stop_epoch=chosen + 1,
        final_train_acc=accuracy(scored, task.X_train, task.y_train),
        test_auc=test_auc(model, task),
    )
    return run, snapshot


# --- the claims: pure functions of per-seed accuracies ---------------------------------------------------------


def gain_points(method: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per seed, 100 · (method − baseline): points of accuracy (NaN where either arm diverged)."""
    return [100.0 * (float(m) - float(b)) for m, b in zip(method, baseline, strict=True)]


def diverged_note(label: str, diverged_seeds: Sequence[int]) -> str:
    if not diverged_seeds:
        return ""
    return (
        f"{label} DIVERGED (non-finite loss) on seed(s) {', '.join(map(str, diverged_seeds))}: its accuracy there "
        "is NaN, so the interval is undefined and the verdict inconclusive"
    )


def beats_claim(
    ensloss: Sequence[float],
    baseline: Sequence[float],
    *,
    baseline_label: str,
    when: str = "final",
    headline: bool = False,
    diverged_seeds: Sequence[int] = (),
    decimals: int = CLAIM_DECIMALS,
) -> ClaimCheck:
    """The paper's statement "EnsLoss is better than <baseline>": per seed, test accuracy of EnsLoss minus that of
    the baseline, in points, against a margin of 0. ``when`` is "final" (last epoch) or "early-stopped" (the
    epoch with the best validation accuracy, per arm)."""
    what = "final test accuracy" if when == "final" else "test accuracy at the epoch chosen on validation"
    notes = [n for n in (diverged_note(baseline_label, diverged_seeds),) if n]
    return ClaimCheck(
        claim=f"EnsLoss generalises better than {baseline_label} ({what})",
        quantity=f"{what}, EnsLoss − {baseline_label} (points, per seed)",
        values=gain_points(ensloss, baseline),
        margin=0.0,
        headline=headline,
        detail="\n    ".join(notes),
        decimals=decimals,
    )


def paired_counts(table, alpha: float = PAIRED_ALPHA) -> dict[str, dict[str, int]]:
    """Per baseline: on how many tasks EnsLoss's final test accuracy is better / tied / worse (paired t-test over
    seeds, two-sided p < ``alpha``): the paper's count. A diverged run makes that task a tie (not tested)."""
    from scipy.stats import ttest_rel

    out = {}
    for base in [a for a in table["arm"].unique() if a != ENSLOSS]:
        counts = {"better": 0, "tie": 0, "worse": 0}
        for _, rows in table.groupby("task", sort=False):
            ens, other = by_seed(rows, ENSLOSS), by_seed(rows, base)
            finite = np.isfinite(ens).all() and np.isfinite(other).all()
            pvalue = ttest_rel(ens, other).pvalue if finite and np.any(ens != other) and len(ens) > 1 else 1.0
            diff = ens.mean() - other.mean()
            counts["tie" if not pvalue < alpha else ("better" if diff > 0 else "worse")] += 1
        out[base] = counts
    return out


def by_seed(rows, arm: str, metric: str = "final_test_acc") -> np.ndarray:
    """``metric`` of ``arm`` in a per-seed table, ordered by seed (so arms pair up seed by seed)."""
    return rows[rows["arm"] == arm].sort_values("seed")[metric].to_numpy(dtype=float)


# --- the derivative figure's data ------------------------------------------------------------------------------


def derivative_draws(
    z: np.ndarray, g: np.ndarray, *, boxcox_lambda: float, clip: float, seed: int, n_more: int = 2
) -> dict:
    """The derivatives one training step drew on its batch margins, plus ``n_more`` fresh draws on the same
    margins, all sorted by z; with BCE's derivative −σ(−z) and the implied losses for comparison."""
    order = np.argsort(z)
    z_t = torch.as_tensor(z[order], dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed + FIGURE_DRAW_STREAM)
    draws = [g[order]] + [ensloss_derivatives(z_t, gen, boxcox_lambda, clip).numpy() for _ in range(n_more)]
    zs = z[order].astype(float)
    bce = np.logaddexp(0.0, -zs)
    return {
        "z": zs,
        "draws": [d.astype(float) for d in draws],
        "bce_derivative": -1.0 / (1.0 + np.exp(zs)),
        "implied": [implied_loss(zs, d.astype(float)) for d in draws],
        "bce_loss": bce - bce[-1],
    }


# --- the experiment --------------------------------------------------------------------------------------------


@method_run(Knobs, figures=make_figures, threads={"quick": 1, "standard": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    """Train every arm on every task for ``n_seeds`` seeds; check the paper's claims on the simulator task."""
    p = ctx.p
    arms = arms_of(p.losses)
    seeds = ctx.seeds(p.n_seeds)
    n_tasks = 1 + bool(p.n_large) + bool(p.breast_cancer) + p.digits_pairs
    bar = ctx.bar(len(seeds) * n_tasks * len(arms) * p.epochs, "epochs (all arms, seeds, tasks)")
    train = dict(
        lr=p.lr,
        epochs=p.epochs,
        momentum=p.momentum,
        weight_decay=p.weight_decay,
        batch_size=p.batch_size,
        boxcox_lambda=p.boxcox_lambda,
        clip=p.clip,
    )
    runs: list[ArmRun] = []
    snapshot = None
    for seed in seeds:
        for task in build_tasks(p, seed, ctx.device):
            for arm in arms:
                series = arm.key if task.name == CLAIM_TASK else f"{task.name}/{arm.key}"
                want = snapshot is None and arm.key == ENSLOSS and task.name == CLAIM_TASK
                snap_epoch = max(1, p.epochs // SNAP_FRACTION) if want else 0
                result, snap = train_arm(ctx, task, arm, seed, series, bar=bar, snap_epoch=snap_epoch, **train)
                runs.append(result)
                snapshot = snap if want else snapshot
    bar.close()
    if all(r.diverged for r in runs):
        first = min(runs, key=lambda r: (r.diverged_step, r.seed))
        raise DivergenceError(
            f"every arm diverged on every seed (first: {LABELS[first.arm]!r} on task {first.task!r}, seed "
            f"{first.seed}, at step {first.diverged_step}): nothing to compare (try a smaller learning rate)"
        )
    derivatives = (
        derivative_draws(*snapshot, boxcox_lambda=p.boxcox_lambda, clip=p.clip, seed=ctx.seed) if snapshot else None
    )
    return outcome(runs, arms, derivatives)


def outcome(runs: list[ArmRun], arms: list[Arm], derivatives: dict | None) -> Outcome:
    """Metrics, claims and extras from the per-arm runs."""
    import pandas as pd

    table = pd.DataFrame([dataclasses.asdict(r) for r in runs])
    sim = table[table["task"] == CLAIM_TASK]
    metrics = {
        f"{m}_{a.key}": float(by_seed(sim, a.key, m).mean())
        for m in ("final_test_acc", "early_stop_test_acc", "final_train_acc", "test_auc")
        for a in arms
    }
    metrics.update({f"diverged_runs_{a.key}": float(sum(r.arm == a.key and r.diverged for r in runs)) for a in arms})
    ens_final, ens_early = by_seed(sim, ENSLOSS), by_seed(sim, ENSLOSS, "early_stop_test_acc")

    def diverged_seeds(key: str) -> list[int]:
        return sorted(r.seed for r in runs if r.task == CLAIM_TASK and r.arm == key and r.diverged)

    claims = []
    for base in [a for a in arms if a.key != ENSLOSS]:
        claims.append(
            beats_claim(
                ens_final,
                by_seed(sim, base.key),
                baseline_label=base.label,
                headline=base.key == HEADLINE_BASELINE,
                diverged_seeds=diverged_seeds(base.key),
            )
        )
    bce = next(a for a in arms if a.key == HEADLINE_BASELINE)
    claims.append(
        beats_claim(
            ens_early,
            by_seed(sim, bce.key, "early_stop_test_acc"),
            baseline_label=bce.label,
            when="early-stopped",
            diverged_seeds=diverged_seeds(bce.key),
        )
    )
    if any(r.arm == ENSLOSS and r.diverged for r in runs if r.task == CLAIM_TASK):
        for c in claims:
            c.detail = "\n    ".join(x for x in (c.detail, diverged_note("EnsLoss", diverged_seeds(ENSLOSS))) if x)
    extras = {
        "per_seed": table,
        "runs": runs,
        "arms": arms,
        "paired": paired_counts(table) if table["seed"].nunique() > 1 else None,
        "derivatives": derivatives,
    }
    return Outcome(metrics=metrics, claims=claims, extras=extras)

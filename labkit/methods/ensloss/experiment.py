"""EnsLoss (arXiv 2409.00908): a fresh random *calibrated convex* loss derivative at every SGD step.

With labels y ∈ {−1, +1}, score f(x) and margin z = y·f(x), SGD on a margin loss φ only needs φ'(z_b).
EnsLoss draws those derivatives at random, subject to φ' ≤ 0 and non-decreasing (convex), φ'(0) < 0
(calibrated) and a tail that vanishes fast for z > 1 (bounded below), and trains on the surrogate
J = (1/B) Σ_b g_b · z_b with g detached, so that ∇J = (1/B) Σ_b g_b ∇z_b. The baselines are fixed
margin losses (BCE, hinge, exponential, focal) on the same network, data, batches and schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labkit import viz
from labkit.core import ClaimCheck, DivergenceError, Outcome, Param, RunContext, iterate_minibatches, method_run
from labkit.data import tabular
from labkit.models import MLP

LOSS_SETS = ("bce,hinge,ensloss", "bce,hinge,exponential,focal,ensloss")

MAIN_METRIC = "test_acc"
PARAMS = [
    Param("lr", float, quick=1e-2, low=1e-5, high=1.0, log=True, help="SGD learning rate (cosine-decayed to 0)"),
    Param("epochs", int, quick=60, standard=60, full=100, low=1, high=1000, help="training epochs per arm"),
    Param(
        "n_seeds",
        int,
        quick=3,
        standard=10,
        full=5,
        low=1,
        high=50,
        help="repeats (seed, seed+1, …): new data draw, split, init and batch order; arms share them",
    ),
    Param(
        "boxcox_lambda",
        float,
        quick=0.0,
        low=-1.0,
        high=1.0,
        help="Box-Cox λ of the derivative family: 0 → −g is log-normal",
    ),
    Param("clip", float, quick=-1.0, low=-10.0, high=-0.01, help="lower bound on a drawn derivative"),
    Param("width", int, quick=256, full=1024, low=2, high=4096, help="hidden units per MLP layer"),
    Param("depth", int, quick=3, low=1, high=8, help="hidden layers of the MLP (ReLU + BatchNorm)"),
    Param(
        "signal_scale",
        float,
        quick=2.0,
        low=0.1,
        high=20.0,
        log=True,
        help="×score before the sigmoid in the simulator: smaller = noisier labels (2 → Bayes acc ≈ 0.8)",
    ),
    Param("n", int, quick=1500, full=5000, low=100, high=200_000, help="simulator samples (70% train, 30% test)"),
    Param("d", int, quick=100, low=1, high=10_000, main=False, help="simulator features"),
    Param(
        "batch_size",
        int,
        quick=128,
        low=2,
        high=4096,
        main=False,
        help="batch size (capped at n_train // 4 on small sets); the last incomplete batch is dropped",
    ),
    Param("weight_decay", float, quick=5e-6, low=0.0, high=0.1, main=False, help="SGD weight decay"),
    Param("momentum", float, quick=0.9, low=0.0, high=0.99, main=False, help="SGD momentum"),
    Param(
        "losses",
        str,
        quick=LOSS_SETS[0],
        standard=LOSS_SETS[1],
        full=LOSS_SETS[1],
        choices=LOSS_SETS,
        main=False,
        help="arms trained side by side",
    ),
    Param(
        "n_large",
        int,
        quick=0,
        standard=5000,
        full=0,
        low=0,
        high=200_000,
        main=False,
        help="a second simulator task with this many samples (0 = none)",
    ),
    Param(
        "breast_cancer",
        bool,
        quick=False,
        standard=True,
        full=True,
        main=False,
        help="also scikit-learn's breast-cancer set with `flip` of its training labels flipped",
    ),
    Param(
        "flip",
        float,
        quick=0.2,
        low=0.0,
        high=0.5,
        main=False,
        help="fraction of training labels flipped on breast-cancer and digits tasks (test labels stay clean)",
    ),
    Param(
        "digits_pairs",
        int,
        quick=0,
        standard=0,
        full=9,
        low=0,
        high=45,
        main=False,
        help="digits class pairs (of 45, evenly spread), 8×8 upsampled to 32×32, small CNN",
    ),
]

TAIL_EPS = 1e-6


# --- the losses, all on margins z = y·f(x) with y ∈ {−1, +1}, mean over the batch -----------------------------


def bce_margin_loss(margins: torch.Tensor) -> torch.Tensor:
    """Logistic loss φ(z) = log(1 + e^{−z}) = softplus(−z); equals BCE-with-logits for t = (y + 1)/2."""
    return F.softplus(-margins).mean()


def hinge_loss(margins: torch.Tensor) -> torch.Tensor:
    """Hinge loss φ(z) = max(0, 1 − z)."""
    return torch.relu(1.0 - margins).mean()


def exponential_loss(margins: torch.Tensor) -> torch.Tensor:
    """Exponential loss φ(z) = e^{−z}."""
    return torch.exp(-margins).mean()


def focal_loss(margins: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss without α: p_t = σ(z), φ(z) = −(1 − p_t)^γ log p_t = σ(−z)^γ · softplus(−z)."""
    return (torch.sigmoid(-margins) ** gamma * F.softplus(-margins)).mean()


FIXED_LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "bce": bce_margin_loss,
    "hinge": hinge_loss,
    "exponential": exponential_loss,
    "focal": focal_loss,
}


# --- EnsLoss ---------------------------------------------------------------------------------------------------


def boxcox_inverse(xi: torch.Tensor, lam: float) -> torch.Tensor:
    """Inverse Box-Cox: BCinv_0(ξ) = e^ξ, BCinv_λ(ξ) = max(1 + λξ, 0)^{1/λ} for λ ≠ 0."""
    if lam == 0.0:
        return torch.exp(xi)
    return torch.clamp(1.0 + lam * xi, min=0.0) ** (1.0 / lam)


def ensloss_derivatives(
    margins: torch.Tensor, generator: torch.Generator, boxcox_lambda: float = 0.0, clip: float = -1.0
) -> torch.Tensor:
    """One random calibrated convex loss derivative g_b = φ'(z_b) per sample (detached).

    1. ξ_b ~ N(0, 1) (from ``generator``), u_b = −BCinv_λ(ξ_b);  2. sort u ascending, clip to u ≥ ``clip``;
    3. give the k-th smallest u to the k-th smallest margin;  4. g_b ← g_b / z_b where z_b > 1;
    5. g_b ← g_b − 1e-6.  Result: g < 0 and non-decreasing in z (a convex, calibrated φ on this batch).
    """
    z = margins.detach()
    xi = torch.randn(z.shape[0], generator=generator, device=generator.device).to(z.device, z.dtype)
    u = torch.sort(-boxcox_inverse(xi, boxcox_lambda)).values.clamp(min=clip)
    g = torch.empty_like(z)
    g[torch.argsort(z)] = u
    g = torch.where(z > 1.0, g / z.clamp(min=1.0), g)
    return g - TAIL_EPS


def ensloss_surrogate(margins: torch.Tensor, derivatives: torch.Tensor) -> torch.Tensor:
    """J = (1/B) Σ_b g_b · z_b with g detached, so ∇J = (1/B) Σ_b g_b ∇z_b (the EnsLoss gradient)."""
    return (derivatives.detach() * margins).mean()


def implied_loss(z_sorted: np.ndarray, g_sorted: np.ndarray) -> np.ndarray:
    """The loss a draw implies on its batch: φ(z) = ∫_z^{z_max} −g(t) dt (trapezoid), so φ' = g, φ(z_max) = 0."""
    steps = 0.5 * (g_sorted[1:] + g_sorted[:-1]) * np.diff(z_sorted)
    from_left = np.concatenate([[0.0], np.cumsum(steps)])  # ∫_{z_min}^{z} g
    return -(from_left[-1] - from_left)


def arm_objective(arm: str, margins: torch.Tensor, generator: torch.Generator, p) -> tuple[torch.Tensor, object]:
    """The training objective of ``arm`` on a batch, and the EnsLoss derivatives it drew (None for fixed losses)."""
    if arm == "ensloss":
        g = ensloss_derivatives(margins, generator, p.boxcox_lambda, p.clip)
        return ensloss_surrogate(margins, g), g
    return FIXED_LOSSES[arm](margins), None


# --- the claim -------------------------------------------------------------------------------------------------


def ensloss_claim(final: dict, best: dict) -> ClaimCheck:
    """The card's claim, on mean test accuracy over seeds (values: one number or one per seed):
    final(EnsLoss) ≥ final(hinge) + 1 pt, final(EnsLoss) ≥ final(BCE) − 0.5 pt, best(EnsLoss) ≥ best(BCE) + 1 pt."""
    f = {k: float(np.mean(v)) for k, v in final.items()}
    b = {k: float(np.mean(v)) for k, v in best.items()}
    gaps = {
        "final ensloss − hinge (pts)": 100 * (f["ensloss"] - f["hinge"]),
        "final ensloss − bce (pts)": 100 * (f["ensloss"] - f["bce"]),
        "best ensloss − bce (pts)": 100 * (b["ensloss"] - b["bce"]),
    }
    tol = 1e-7
    passed = (
        gaps["final ensloss − hinge (pts)"] >= 1.0 - tol
        and gaps["final ensloss − bce (pts)"] >= -0.5 - tol
        and gaps["best ensloss − bce (pts)"] >= 1.0 - tol
    )
    numbers = {
        **{f"final {k}": round(f[k], 4) for k in ("ensloss", "bce", "hinge")},
        **{f"best {k}": round(b[k], 4) for k in ("ensloss", "bce")},
        **{k: round(v, 2) for k, v in gaps.items()},
    }
    return ClaimCheck(
        claim="EnsLoss final test acc ≥ hinge + 1 pt and ≥ BCE − 0.5 pt; best-epoch ≥ BCE + 1 pt (mean over seeds)",
        passed=bool(passed),
        numbers=numbers,
        detail=_per_seed_text(final, best),
    )


def _per_seed_text(final: dict, best: dict) -> str:
    def row(name, values):
        return f"{name}: " + ", ".join(
            f"{k} " + " ".join(f"{x:.3f}" for x in np.atleast_1d(v)) for k, v in values.items()
        )

    return "per seed — " + row("final", final) + " | " + row("best", best)


def by_seed(rows, arm: str, metric: str = "final_test_acc") -> np.ndarray:
    """``metric`` of ``arm`` in a per-seed table, ordered by seed (so arms pair up seed by seed)."""
    return rows[rows["arm"] == arm].sort_values("seed")[metric].to_numpy()


def paired_verdicts(table, alpha: float = 0.05) -> dict[str, dict[str, int]]:
    """Per baseline: on how many tasks EnsLoss's final test acc is better / tied / worse (paired t-test over
    seeds, two-sided p < ``alpha``), the paper's 'better / ties / worse' count."""
    from scipy.stats import ttest_rel

    out = {}
    for base in [a for a in table["arm"].unique() if a != "ensloss"]:
        counts = {"better": 0, "tie": 0, "worse": 0}
        for _, rows in table.groupby("task", sort=False):
            ens, other = by_seed(rows, "ensloss"), by_seed(rows, base)
            diff = ens.mean() - other.mean()
            pvalue = ttest_rel(ens, other).pvalue if np.any(ens != other) else 1.0
            counts["tie" if not pvalue < alpha else ("better" if diff > 0 else "worse")] += 1
        out[base] = counts
    return out


def paired_claim(table) -> ClaimCheck:
    """Reported, not asserted: EnsLoss is worse than no baseline on any task (paired t-test, p < 0.05)."""
    verdicts = paired_verdicts(table)
    numbers = {f"vs {b} {k}": v for b, c in verdicts.items() for k, v in c.items()}
    return ClaimCheck(
        claim="No fixed loss beats EnsLoss significantly on any task (paired t-test over seeds, p < 0.05)",
        passed=all(c["worse"] == 0 for c in verdicts.values()),
        numbers=numbers,
        asserted=False,
        detail=f"{table['task'].nunique()} task(s), {table['seed'].nunique()} seeds",
    )


# --- data and models -------------------------------------------------------------------------------------------


@dataclass
class Task:
    """One binary task on the run's device: y ∈ {0, 1} as float, and a model factory."""

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
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


def _to_task(name, split: tabular.Split, device, make_model, shape=None) -> Task:
    def tensor(a):
        t = torch.as_tensor(a, device=device)
        if shape is not None:  # images: (n, 64) → (n, 1, 32, 32)
            t = F.interpolate(t.reshape(-1, 1, *shape), size=(32, 32), mode="bilinear", align_corners=False)
        return t

    return Task(
        name,
        tensor(split.X_train),
        torch.as_tensor(split.y_train, device=device, dtype=torch.float32),
        tensor(split.X_test),
        torch.as_tensor(split.y_test, device=device, dtype=torch.float32),
        make_model,
    )


def _mlp_factory(d: int, p):
    return lambda: MLP(d, [p.width] * p.depth, 1, batch_norm=True)


def build_tasks(p, seed: int, device) -> list[Task]:
    """The run's tasks for one seed: the simulator (always), then the optional extra tasks."""
    tasks = []
    for name, n in [("sim", p.n)] + ([(f"sim n={p.n_large}", p.n_large)] if p.n_large else []):
        X, y, _ = tabular.relu_sum_classification(n, p.d, seed=seed, scale=p.signal_scale)
        tasks.append(_to_task(name, tabular.standardize_split(X, y, seed=seed), device, _mlp_factory(p.d, p)))
    if p.breast_cancer:
        split = tabular.standardize_split(*tabular.breast_cancer(), seed=seed)
        split.y_train = tabular.flip_labels(split.y_train, p.flip, seed)
        tasks.append(_to_task("breast_cancer", split, device, _mlp_factory(split.X_train.shape[1], p)))
    pairs = tabular.digit_pairs()
    for k in np.linspace(0, len(pairs) - 1, p.digits_pairs).round().astype(int) if p.digits_pairs else []:
        a, b = pairs[k]
        X, y = tabular.digits_pair(a, b)
        split = tabular.standardize_split(X.reshape(len(X), -1), y, seed=seed)
        split.y_train = tabular.flip_labels(split.y_train, p.flip, seed)
        tasks.append(_to_task(f"digits {a}v{b}", split, device, small_cnn, shape=(8, 8)))
    return tasks


# --- training --------------------------------------------------------------------------------------------------


@torch.no_grad()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of 1[f(x) > 0] == y, in eval mode."""
    model.eval()
    return float(((model(X).squeeze(-1) > 0).float() == y).float().mean())


@torch.no_grad()
def test_auc(model: nn.Module, task: Task) -> float:
    """ROC AUC of the test logits (scikit-learn); NaN when the scores are not finite."""
    from sklearn.metrics import roc_auc_score

    model.eval()
    scores = model(task.X_test).squeeze(-1).cpu().numpy()
    return float(roc_auc_score(task.y_test.cpu().numpy(), scores)) if np.isfinite(scores).all() else float("nan")


def train_arm(ctx: RunContext, task: Task, arm: str, seed: int, series: str, bar, snap_epoch: int = 0) -> dict:
    """Train one arm on one task with SGD + cosine schedule; log train/test accuracy each epoch.

    Model init and batch order depend only on ``seed`` (shared across arms). A non-finite loss stops
    the arm; its accuracies are then those of the network when it stopped (``diverged_at`` says when).
    """
    p = ctx.p
    torch.manual_seed(seed)
    model = task.make_model().to(ctx.device)
    opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.epochs)
    state = {
        "step": 0,
        "diverged_at": None,
        "snapshot": None,
        "order": torch.Generator().manual_seed(seed),
        "draws": torch.Generator().manual_seed(seed + 7919),
    }
    test_curve = []
    for epoch in range(1, p.epochs + 1):
        train_acc = train_epoch(ctx, model, opt, task, arm, state, series, epoch, snap=epoch == snap_epoch)
        test_curve.append(accuracy(model, task.X_test, task.y_test))
        ctx.history.log_many(epoch, series, {"train_acc": train_acc, "test_acc": test_curve[-1]}, seed=seed)
        bar.update(p.epochs - epoch + 1 if state["diverged_at"] else 1)
        if state["diverged_at"]:
            break
        sched.step()
    return {
        "diverged_at": state["diverged_at"],
        "snapshot": state["snapshot"],
        "final_test_acc": test_curve[-1],
        "best_test_acc": max(test_curve),
        "best_epoch": int(np.argmax(test_curve)) + 1,
        "final_train_acc": accuracy(model, task.X_train, task.y_train),
        "test_auc": test_auc(model, task),
    }


def train_epoch(
    ctx: RunContext, model, opt, task: Task, arm: str, state: dict, series: str, epoch: int, snap: bool = False
) -> float:
    """One SGD pass over the shuffled training set, last incomplete batch dropped (BatchNorm needs B > 1).

    Returns the running training accuracy, the fraction of z_b = y_b·f(x_b) > 0 over the epoch's batches
    (train mode, as the weights move; cheap), or NaN if the epoch diverged before its first step.
    """
    model.train()
    n_train = len(task.y_train)
    batch = max(2, min(ctx.p.batch_size, n_train // 4))
    correct, seen = torch.zeros((), device=ctx.device), 0
    for idx in iterate_minibatches(n_train, batch, state["order"], drop_last=True):
        state["step"] += 1
        idx = idx.to(ctx.device)
        margins = (2.0 * task.y_train[idx] - 1.0) * model(task.X_train[idx]).squeeze(-1)
        loss, g = arm_objective(arm, margins, state["draws"], ctx.p)
        if snap and state["snapshot"] is None and g is not None:
            state["snapshot"] = (margins.detach().cpu().numpy(), g.cpu().numpy())
        try:
            ctx.check(loss.detach(), state["step"], series)
        except DivergenceError as err:
            state["diverged_at"] = {"epoch": epoch, "step": state["step"], "message": str(err)}
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        correct += (margins.detach() > 0).sum()
        seen += len(idx)
    return float(correct) / seen if seen else float("nan")


def derivative_draws(z: np.ndarray, g: np.ndarray, p, seed: int, n_more: int = 2) -> dict:
    """The derivatives one training step drew on its batch margins, plus ``n_more`` fresh draws on the
    same margins, all sorted by z; with BCE's derivative −σ(−z) and the implied losses for comparison."""
    order = np.argsort(z)
    z_t = torch.as_tensor(z[order], dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed + 104729)
    draws = [g[order]] + [ensloss_derivatives(z_t, gen, p.boxcox_lambda, p.clip).numpy() for _ in range(n_more)]
    zs = z[order].astype(float)
    bce = np.logaddexp(0.0, -zs)
    return {
        "z": zs,
        "draws": [d.astype(float) for d in draws],
        "bce_derivative": -1.0 / (1.0 + np.exp(zs)),
        "implied": [implied_loss(zs, d.astype(float)) for d in draws],
        "bce_loss": bce - bce[-1],
    }


# --- figures ---------------------------------------------------------------------------------------------------


def accuracy_figure(history, arms):
    """Test accuracy (solid) and running train accuracy (dotted) per epoch per loss, mean ± std over seeds."""
    fig = viz.curves(
        history,
        "test_acc",
        series=arms,
        xlabel="epoch",
        ylabel="accuracy",
        title="Train (dotted) and test (solid) accuracy: the overfitting gap",
    )
    for trace in viz.curves(history, "train_acc", series=arms, band=False).data:
        trace.update(line={"dash": "dot", "color": trace.line.color}, name=f"{trace.name} (train)")
        fig.add_trace(trace)
    return fig


def derivative_figures(d: dict) -> dict:
    """g vs z for the recorded draws with BCE's −σ(−z); and their implied losses φ(z) with BCE's log(1 + e^{−z})."""
    ys = {f"EnsLoss draw {k + 1}": g for k, g in enumerate(d["draws"])}
    deriv = viz.lines(
        d["z"],
        {**ys, "BCE: −σ(−z)": d["bce_derivative"]},
        mode="lines+markers",
        title="Assigned derivative g vs margin z (one batch, three draws)",
        xlabel="margin z",
        ylabel="g = φ'(z)",
    )
    implied = viz.lines(
        d["z"],
        {**{f"EnsLoss draw {k + 1}": v for k, v in enumerate(d["implied"])}, "BCE log(1+e^{−z})": d["bce_loss"]},
        title="Implied convex losses φ(z) = ∫_z^{z_max} −g (anchored at 0 on the right)",
        xlabel="margin z",
        ylabel="φ(z) − φ(z_max)",
    )
    return {"derivatives": deriv, "implied_loss": implied}


def gain_per_task(table, base: str = "bce") -> dict[str, np.ndarray]:
    """Per task, 100 · (final test acc of EnsLoss − that of ``base``) for each seed (paired by seed)."""
    return {t: 100 * (by_seed(rows, "ensloss") - by_seed(rows, base)) for t, rows in table.groupby("task", sort=False)}


def make_figures(result) -> dict:
    """Accuracy curves, final and best test accuracy per arm, EnsLoss derivatives and implied losses,
    and (with several tasks) EnsLoss − BCE per task."""
    arms, table = result.extras["arms"], result.extras["per_seed"]
    sim = table[table["task"] == "sim"]
    figs = {"accuracy": accuracy_figure(result.history, arms)}
    for m, title in (("final_test_acc", "Final test accuracy"), ("best_test_acc", "Best-epoch test accuracy")):
        values = {a: sim[sim["arm"] == a][m].tolist() for a in arms}
        figs[m] = viz.bars(values, title=f"{title} (dots: seeds)", ylabel="accuracy")
        low, high = np.nanmin(list(values.values())), np.nanmax(list(values.values()))
        figs[m].update_yaxes(range=[max(0.0, low - 0.03), min(1.0, high + 0.02)])
    if result.extras.get("derivatives"):
        figs.update(derivative_figures(result.extras["derivatives"]))
    if table["task"].nunique() > 1:
        figs["tasks"] = viz.bars(
            gain_per_task(table),
            ylabel="points",
            title="EnsLoss − BCE final test accuracy per task (points; dots: seeds)",
        )
    return figs


# --- the experiment --------------------------------------------------------------------------------------------


@method_run(PARAMS, figures=make_figures, threads={"quick": 1, "standard": 1})
def run(ctx: RunContext) -> Outcome:
    """Train every arm on every task for ``n_seeds`` seeds; check the card's claim on the simulator task."""
    p = ctx.p
    arms = p.losses.split(",")
    seeds = [ctx.seed + k for k in range(p.n_seeds)]
    n_tasks = 1 + bool(p.n_large) + bool(p.breast_cancer) + p.digits_pairs
    bar = ctx.bar(len(seeds) * n_tasks * len(arms) * p.epochs, "epochs (all arms, seeds, tasks)")
    rows, diverged, snapshot = [], [], None
    snap_epoch = max(1, p.epochs // 20)  # a few epochs in: margins on both sides of 0 and of 1
    for seed in seeds:
        for task in build_tasks(p, seed, ctx.device):
            for arm in arms:
                series = arm if task.name == "sim" else f"{task.name}/{arm}"
                want = snapshot is None and arm == "ensloss" and task.name == "sim"
                res = train_arm(ctx, task, arm, seed, series, bar, snap_epoch if want else 0)
                snapshot = res.pop("snapshot") if want else snapshot
                if res["diverged_at"]:
                    diverged.append({"task": task.name, "arm": arm, "seed": seed, **res["diverged_at"]})
                rows.append(
                    {
                        "task": task.name,
                        "arm": arm,
                        "seed": seed,
                        **{k: v for k, v in res.items() if k not in ("diverged_at", "snapshot")},
                    }
                )
    bar.close()
    return _outcome(rows, arms, diverged, snapshot, p, ctx.seed)


def _outcome(rows, arms, diverged, snapshot, p, seed) -> Outcome:
    import pandas as pd

    table = pd.DataFrame(rows)
    sim = table[table["task"] == "sim"]
    metrics = {
        f"{m}_{a}": float(by_seed(sim, a, m).mean())
        for m in ("final_test_acc", "best_test_acc", "final_train_acc", "test_auc")
        for a in arms
    }
    claim = ensloss_claim(
        {a: by_seed(sim, a) for a in ("ensloss", "bce", "hinge")},
        {a: by_seed(sim, a, "best_test_acc") for a in ("ensloss", "bce", "hinge")},
    )
    if diverged:
        claim.detail += "\n    diverged (stopped): " + "; ".join(
            f"{d['arm']} on {d['task']}, seed {d['seed']}, epoch {d['epoch']}" for d in diverged
        )
    claims = [claim]
    if table["seed"].nunique() > 1:
        claims.append(paired_claim(table))
    extras = {
        "per_seed": table,
        "diverged": diverged,
        "arms": arms,
        "derivatives": derivative_draws(*snapshot, p, seed) if snapshot else None,
    }
    return Outcome(metrics=metrics, claims=claims, extras=extras)

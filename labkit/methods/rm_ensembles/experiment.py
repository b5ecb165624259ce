"""RM ensembles' experiment: the typed knobs, the Gaussian toy (the card's), the proxy RMs, best-of-n (and PPO) per
objective, the claims, run().

Responses y ∈ R^d from the "SFT policy" N(0, I), gold reward r*(y) = wᵀy − c‖y‖², proxy RMs = ReLU MLPs trained by
Bradley–Terry on (noisy) gold preferences (:mod:`labkit.models.reward`). The paper's objectives, the best-of-n
evaluation and the Gaussian-policy PPO are in :mod:`.method`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, params_of
from labkit.data import preferences as prefs
from labkit.models.reward import (
    RewardEnsemble,
    RewardMLP,
    flip_pairs,
    preference_accuracy,
    standardise,
    train_ensemble,
    uncertainty_weighted_objective,
)
from labkit.substrates.rlhf import best_of_n_kl

from .figures import make_figures
from .method import BonCurves, bon_curves, evaluate_best_of_n, powers_of_two, ppo_rewards, train_gaussian_ppo


@dataclass(frozen=True)
class Knobs:
    lam: float = knob(
        0.5,
        low=0.0,
        high=10.0,
        help="UWO weight λ for best-of-n: mean − λ·Var over members (population variance, as the BoN code)",
    )
    noise: float = knob(0.25, low=0.0, high=0.5, help="label noise: share of preference pairs flipped")
    n_members: int = knob(5, low=2, high=20, help="ensemble size k (members differ only by seed)")
    n_pairs: int = knob(1000, full=4000, low=50, high=100_000, help="preference pairs from N(0, I) × N(0, I)")
    max_n: int = knob(
        2048,
        full=8192,
        low=2,
        high=1_000_000,
        help="best-of-n up to this n (powers of two, 1 … max_n; at most pool_size)",
    )
    pool_size: int = knob(
        20_000,
        full=50_000,
        low=2,
        high=10_000_000,
        main=False,
        help="BoN pool N drawn from N(0, I) per data seed (also the standardisation pool)",
    )
    compare_noise: bool = knob(
        True, main=False, help="also train an ensemble on the same pairs with 0% label noise (skipped when noise = 0)"
    )
    ppo: bool = knob(
        False,
        standard=True,
        full=True,
        main=False,
        help="also run PPO on a Gaussian policy against single, mean, WCO, UWO, for β_KL in {0, 0.01}",
    )
    ppo_lam: float = knob(
        0.1,
        low=0.0,
        high=10.0,
        main=False,
        help="UWO λ for PPO (unbiased variance, as the PPO code; 0.1 in the released config)",
    )
    ppo_steps: int = knob(300, low=1, high=100_000, main=False, help="PPO iterations (one batch each)")
    ppo_batch: int = knob(256, low=2, high=100_000, main=False, help="samples per PPO iteration")
    ppo_epochs: int = knob(4, low=1, high=50, main=False, help="Adam steps on each batch")
    ppo_lr: float = knob(0.005, low=1e-5, high=1.0, log=True, main=False, help="PPO Adam learning rate")
    rm_steps: int = knob(300, low=1, high=100_000, main=False, help="Adam steps per reward model")
    rm_lr: float = knob(3e-3, low=1e-5, high=1.0, log=True, main=False, help="reward-model learning rate")
    rm_hidden: int = knob(32, low=1, high=4096, main=False, help="width of the RM's two hidden layers")
    dim: int = knob(8, low=1, high=1024, main=False, help="response dimension d")
    curvature: float = knob(0.15, low=0.0, high=10.0, main=False, help="c in r*(y) = wᵀy − c‖y‖²")
    n_seeds: int = knob(
        3,
        standard=3,
        full=5,
        low=1,
        high=100,
        main=False,
        help="data seeds seed, seed+1, …: each draws w, pairs, labels, pool and its own k members",
    )


PARAMS = params_of(Knobs)
MAIN_METRIC = "gold_reward"

RM_BATCH = 128  # the card's RM mini-batch
PPO_BETAS = (0.0, 0.01)  # β_KL of the PPO part: none, and the paper's small penalty
LAM_SWEEP = (0.1, 0.5, 1.0, 2.0)  # UWO λ values shown in the λ figure
TAIL_SCALE = 2.0  # test pairs for the "tail" accuracy come from N(0, TAIL_SCALE² I)
N_TEST = 2000  # held-out test pairs per kind (typical, tail)
DISAGREEMENT_POINTS = 2000  # pool samples in the disagreement scatter
FLIP_SEED_OFFSET = 10**6  # the label flips of data seed s come from Generator(s + FLIP_SEED_OFFSET) (not on k)
MEMBER_SEED_STRIDE = 1000  # member i of data seed s has seed MEMBER_SEED_STRIDE·s + i
PPO_SEED_OFFSET = 2 * 10**6  # PPO sampling of data seed s: Generator(s + PPO_SEED_OFFSET), shared by every arm

# --- the claims' margins, fixed before any run ------------------------------------------------------------
#: ensembles help: WCO and UWO end above the single RM — the paper's "outperform"; the card's 0.25 / 0.4 came from
#: a prototype, not from the paper
ENSEMBLE_MARGIN = 0.0
#: single-RM over-optimisation: gold(n_max) at least this far below its peak (the card's bar; a drop ≥ 0 holds by
#: construction, so the claim needs a positive one; the paper gives no number)
MIN_DROP = 0.2
#: printed decimals of the claims. benchmarks/spread/rm_ensembles.json: avx2, avx512 and 2 threads agree exactly, but
#: torch's portable kernels (ATEN_CPU_CAPABILITY=default) move the claims' interval edges by up to 0.03 (the RMs train
#: a little differently, and best-of-2048 picks a few samples from the top of the pool), so only 1 decimal means
#: anything, and even that can flip at a rounding boundary: the notebook's checked cell prints the verdicts only
CLAIM_DECIMALS = 1

#: the best-of-n arms: what the code branches on (key) and what the plots and history show (label)
ARMS = (
    Arm("single", "single"),
    Arm("mean", "mean"),
    Arm("wco", "WCO"),
    Arm("uwo", "UWO"),
    Arm("single_mean_of_k", "single (mean of k)"),
)


@dataclass(frozen=True)
class Condition:
    """A label-noise setting the ensemble is trained under: ``suffix`` marks its history series and metrics."""

    key: str
    rate: float
    label_suffix: str = ""
    metric_suffix: str = ""

    def series(self, arm: Arm) -> str:
        return arm.label + self.label_suffix

    def metric(self, arm: Arm) -> str:
        return arm.key + self.metric_suffix


def conditions(noise: float, compare_noise: bool) -> list[Condition]:
    """The main noise rate, plus 0% on the same pairs when asked for (and the main rate is not 0 already)."""
    main = Condition("main", noise)
    return [main] + ([Condition("clean", 0.0, " · 0% noise", "_0pct_noise")] if compare_noise and noise > 0 else [])


# --------------------------------------------------------------------------------------------- data and RMs


@dataclass
class ToyData:
    """One data seed: gold direction w, clean BT-labelled pairs, the BoN pool, held-out test pairs."""

    w: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor
    pool: torch.Tensor
    gold_pool: torch.Tensor
    tests: dict


def make_toy(seed: int, n_pairs: int, dim: int, pool_size: int, curvature: float, n_test: int = N_TEST) -> ToyData:
    """w ~ unit; pairs a, b ~ N(0, I), a ≻ b with P = σ(r*(a) − r*(b)); pool ~ N(0, I); test pairs from N(0, I)
    ("typical") and N(0, TAIL_SCALE² I) ("tail"), ordered by r* itself. All from ``Generator(seed)``."""
    gen = torch.Generator().manual_seed(int(seed))
    w = prefs.unit_direction(dim, gen)

    def gold(y):
        return prefs.quadratic_gold_reward(y, w, curvature)

    a, b = torch.randn(n_pairs, dim, generator=gen), torch.randn(n_pairs, dim, generator=gen)
    chosen, rejected = prefs.order_pairs(a, b, prefs.bt_labels(gold(a), gold(b), gen))
    pool = torch.randn(pool_size, dim, generator=gen)
    tests = {}
    for name, scale in (("typical", 1.0), ("tail", TAIL_SCALE)):
        ta, tb = scale * torch.randn(n_test, dim, generator=gen), scale * torch.randn(n_test, dim, generator=gen)
        tests[name] = prefs.order_pairs(ta, tb, gold(ta) > gold(tb))
    return ToyData(w, chosen, rejected, pool, gold(pool), tests)


def train_members(
    data: ToyData, *, noise: float, seed: int, dim: int, hidden: int, n_members: int, steps: int, lr: float
) -> RewardEnsemble:
    """k RMs on the data's pairs with ``noise`` of them flipped (``Generator(seed + FLIP_SEED_OFFSET)``, so the
    flips do not depend on k); member i has seed MEMBER_SEED_STRIDE·seed + i. Standardised over the pool."""
    chosen, rejected = data.chosen, data.rejected
    if noise > 0:
        flip_gen = torch.Generator().manual_seed(int(seed) + FLIP_SEED_OFFSET)
        chosen, rejected, _ = flip_pairs(chosen, rejected, noise, flip_gen)
    ens = train_ensemble(
        lambda: RewardMLP(dim, (hidden, hidden)),
        chosen,
        rejected,
        [MEMBER_SEED_STRIDE * seed + i for i in range(n_members)],
        steps=steps,
        lr=lr,
        batch_size=RM_BATCH,
    )
    return ens.fit_standardisation(data.pool)


def member_accuracy(ens: RewardEnsemble, tests: dict) -> dict[str, list[float]]:
    """Per member, the share of held-out pairs it orders like the gold reward: {"typical": [...], "tail": [...]}."""
    return {name: [preference_accuracy(m, *pair) for m in ens.members] for name, pair in tests.items()}


# --------------------------------------------------------------------------------------------- claims


def final_gold(curves) -> np.ndarray:
    """gold(n_max) per seed from gold curves ``(seeds, len(ns))``."""
    return np.atleast_2d(np.asarray(curves, float))[:, -1]


def peak_drop(gold_curves) -> np.ndarray:
    """Per seed: max_n gold − gold(n_max) (≥ 0). ``gold_curves (seeds, len(ns))``."""
    g = np.atleast_2d(np.asarray(gold_curves, float))
    return g.max(1) - g[:, -1]


def ensemble_claim(single, wco, uwo, n_max: int, margin: float = ENSEMBLE_MARGIN, clean: bool = False) -> ClaimCheck:
    """Headline (at the main noise rate): WCO and UWO each end with more gold than the single RM at n_max. Curves
    ``(seeds, len(ns))``; the value per seed is the smaller of the two gains, so both must beat the single RM."""
    s, gw, gu = final_gold(single), final_gold(wco) - final_gold(single), final_gold(uwo) - final_gold(single)
    return ClaimCheck(
        claim=("without label noise, " if clean else "")
        + f"conservative ensembles beat a single RM: best-of-n gold at n={n_max} of WCO and of UWO each above the "
        "single RM's (single: the mean over the k members' own curves)",
        quantity="min(gold(WCO) − gold(single), gold(UWO) − gold(single)) at n_max",
        values=np.minimum(gw, gu),
        margin=margin,
        headline=not clean,
        numbers={
            "WCO − single": float(gw.mean()),
            "UWO − single": float(gu.mean()),
            "gold single": float(s.mean()),
            "gold WCO": float(final_gold(wco).mean()),
            "gold UWO": float(final_gold(uwo).mean()),
        },
        detail="numbers: means over seeds; margin 0 is the paper's 'outperform' (the card's 0.25 was a prototype's)",
        decimals=CLAIM_DECIMALS,
    )


def overoptimisation_claim(single, n_max: int, min_drop: float = MIN_DROP) -> ClaimCheck:
    """The single RM over-optimises: gold(n_max) ≤ max_n gold − ``min_drop``; one drop per seed."""
    drops = peak_drop(single)
    return ClaimCheck(
        claim=f"a single RM over-optimises: its best-of-n gold at n={n_max} is ≥ {min_drop:g} below its peak",
        quantity="max_n gold − gold(n_max), single RM (mean of the k members' curves)",
        values=drops,
        margin=min_drop,
        detail="the margin is the card's (the paper gives no number)",
        decimals=CLAIM_DECIMALS,
    )


def mean_between_claim(single, mean, wco, uwo, n_max: int) -> ClaimCheck:
    """The mean ensemble lies in between: single ≤ mean ≤ min(WCO, UWO) at n_max (value per seed: the smaller of
    the two gaps, so both orderings must hold)."""
    s, m = final_gold(single), final_gold(mean)
    top = np.minimum(final_gold(wco), final_gold(uwo))
    return ClaimCheck(
        claim=f"the mean ensemble lies in between: single ≤ mean ≤ min(WCO, UWO) at n={n_max}",
        quantity="min(gold(mean) − gold(single), min(gold(WCO), gold(UWO)) − gold(mean))",
        values=np.minimum(m - s, top - m),
        margin=0.0,
        numbers={"mean − single": float((m - s).mean()), "gold mean": float(m.mean())},
        decimals=CLAIM_DECIMALS,
    )


def ppo_claim(final: Mapping[tuple[str, float], Sequence[float]]) -> ClaimCheck:
    """PPO: WCO and UWO each end with more gold than the single RM, for every β_KL. ``final[(objective key, β)]``
    = the final gold per seed; the value per seed is the smallest gain over objectives and β."""
    betas = sorted({b for _, b in final})
    gains = {
        (obj, b): np.asarray(final[(obj, b)], float) - np.asarray(final[("single", b)], float)
        for obj in ("wco", "uwo")
        for b in betas
    }
    return ClaimCheck(
        claim="PPO: the final gold of WCO and of UWO each above the single RM's, for every β_KL",
        quantity="min over {WCO, UWO} × β_KL of gold(objective) − gold(single)",
        values=np.min(np.stack(list(gains.values())), axis=0),
        margin=0.0,
        numbers={f"{o.upper()} − single, β_KL={b:g}": float(g.mean()) for (o, b), g in gains.items()},
        detail="single = member 1 alone (PPO is not repeated for every member)",
        decimals=CLAIM_DECIMALS,
    )


def make_claims(gold: Mapping[str, np.ndarray], n_max: int, clean: bool) -> list[ClaimCheck]:
    """The BoN claims from gold curves ``gold[metric key] (seeds, len(ns))`` (keys of :meth:`Condition.metric`)."""
    single = gold["single_mean_of_k"]
    claims = [
        ensemble_claim(single, gold["wco"], gold["uwo"], n_max),
        overoptimisation_claim(single, n_max),
        mean_between_claim(single, gold["mean"], gold["wco"], gold["uwo"], n_max),
    ]
    if clean:
        sfx = "_0pct_noise"
        claims.append(
            ensemble_claim(gold["single_mean_of_k" + sfx], gold["wco" + sfx], gold["uwo" + sfx], n_max, clean=True)
        )
    return claims


# --------------------------------------------------------------------------------------------- the experiment


def log_curves(ctx: RunContext, ns, curves: BonCurves, series: str, seed: int) -> None:
    """History rows of one BoN curve set: step = n; metrics gold_reward, proxy_z, gold_z, gap, kl_bon."""
    for j, n in enumerate(ns):
        for metric, values in curves.items():
            ctx.history.log(n, series, metric, values[j], seed=seed)
        ctx.history.log(n, series, "kl_bon", best_of_n_kl(n), seed=seed)


def summarise(per_seed: Mapping[str, list[BonCurves]]) -> dict[str, float]:
    """Final metrics: means over seeds of gold(n_max), peak drop and gap per (arm, condition) metric key."""
    out = {}
    for key, curves in per_seed.items():
        g = np.stack([c.gold_reward for c in curves])
        out[f"gold_{key}"] = float(g[:, -1].mean())
        out[f"peak_drop_{key}"] = float(peak_drop(g).mean())
        out[f"gap_{key}"] = float(np.mean([c.gap[-1] for c in curves]))
    return out


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    if p.max_n > p.pool_size:
        raise ValueError(f"max_n={p.max_n} is larger than pool_size={p.pool_size}: best-of-n needs n ≤ N")
    seeds = ctx.seeds(p.n_seeds)
    ns = powers_of_two(p.max_n)
    conds = conditions(p.noise, p.compare_noise)
    n_ppo = len(ARMS[:4]) * len(PPO_BETAS) if p.ppo else 0
    bar = ctx.bar(len(seeds) * (len(conds) + n_ppo), f"RM ensembles: {len(seeds)} data seed(s)")
    per_seed: dict[str, list[BonCurves]] = {}  # metric key → one curve set per seed
    series: dict[str, str] = {}  # metric key → history series label
    acc = {"typical": [], "tail": []}
    lam_sweep = {f"{lam:g}": [] for lam in LAM_SWEEP}
    ppo_final: dict[tuple[str, float], list[float]] = {}
    disagreement = None
    for seed in seeds:
        data = make_toy(seed, p.n_pairs, p.dim, p.pool_size, p.curvature)
        for cond in conds:
            ens = train_members(
                data,
                noise=cond.rate,
                seed=seed,
                dim=p.dim,
                hidden=p.rm_hidden,
                n_members=p.n_members,
                steps=p.rm_steps,
                lr=p.rm_lr,
            )
            curves = evaluate_best_of_n(ens, data.pool, data.gold_pool, ns, p.lam)
            for arm in ARMS:
                name = cond.series(arm)
                ctx.check(float(np.sum(curves[arm.key].gold_reward)), p.rm_steps, name)
                per_seed.setdefault(cond.metric(arm), []).append(curves[arm.key])
                series[cond.metric(arm)] = name
                log_curves(ctx, ns, curves[arm.key], name, seed)
            bar.update(1)
            if cond.key != "main":
                continue
            for name, values in member_accuracy(ens, data.tests).items():
                acc[name].append(values)
            S = standardise(ens.member_scores(data.pool), ens.mean, ens.std)
            for lam in LAM_SWEEP:
                lam_curve = bon_curves(data.gold_pool, uncertainty_weighted_objective(S, lam), ns).gold_reward
                lam_sweep[f"{lam:g}"].append(lam_curve)
            if disagreement is None:
                k = min(DISAGREEMENT_POINTS, p.pool_size)
                disagreement = {"norm": data.pool[:k].norm(dim=-1).tolist(), "std": S[:, :k].std(0).tolist()}
            if p.ppo:
                for key, reward_fn in ppo_rewards(ens, p.ppo_lam).items():
                    label = next(a.label for a in ARMS if a.key == key)
                    for beta in PPO_BETAS:
                        name = f"PPO {label} β_KL={beta:g}"

                        def on_log(step, gold, proxy, kl, weights, name=name, seed=seed):
                            ctx.check(gold + proxy + kl, step, name)
                            ctx.check_weights(weights, step, name)
                            for metric, value in (("ppo_gold", gold), ("ppo_proxy", proxy), ("ppo_kl", kl)):
                                ctx.history.log(step, name, metric, value, seed=seed)

                        gold, _, _ = train_gaussian_ppo(
                            reward_fn,
                            data.w,
                            beta_kl=beta,
                            steps=p.ppo_steps,
                            batch=p.ppo_batch,
                            epochs=p.ppo_epochs,
                            lr=p.ppo_lr,
                            curvature=p.curvature,
                            seed=seed + PPO_SEED_OFFSET,
                            on_log=on_log,
                        )
                        ppo_final.setdefault((key, beta), []).append(gold)
                        bar.update(1)
    bar.close()
    gold = {key: np.stack([c.gold_reward for c in curves]) for key, curves in per_seed.items()}
    claims = make_claims(gold, ns[-1], clean=len(conds) > 1)
    metrics = summarise(per_seed)
    if p.ppo:
        claims.append(ppo_claim(ppo_final))
        metrics.update({f"ppo_gold_{o}_beta{b:g}": float(np.mean(v)) for (o, b), v in ppo_final.items()})
    acc_arr = {name: np.asarray(v) for name, v in acc.items()}  # (seeds, k)
    metrics.update({f"rm_acc_{name}": float(v.mean()) for name, v in acc_arr.items()})
    extras = {
        "ns": ns,
        "seeds": seeds,
        "series": list(series.values()),
        "lam": p.lam,
        "gold_table": {series[key]: g.tolist() for key, g in gold.items()},
        "lam_sweep": {lam: np.mean(v, 0).tolist() for lam, v in lam_sweep.items()},
        "accuracy": {name: v.tolist() for name, v in acc_arr.items()},
        "accuracy_bars": {
            f"RM {i + 1} · {name}": acc_arr[name][:, i].tolist()
            for name in ("typical", "tail")
            for i in range(p.n_members)
        },
        "disagreement": disagreement,
    }
    if p.ppo:
        labels = {a.key: a.label for a in ARMS}
        extras["ppo_final"] = {f"{labels[o]} β_KL={b:g}": v for (o, b), v in ppo_final.items()}
    return Outcome(metrics=metrics, claims=claims, extras=extras)

"""Reward-model ensembles against over-optimisation (Coste et al., arXiv 2310.02743).

k proxy reward models R_1 … R_k (same preference data, different seeds), each standardised over the SFT
policy's samples, are combined into one score (:mod:`labkit.models.reward`):

    mean:  R_mean(y) = (1/k) Σ_i R_i(y)
    WCO:   R_WCO(y)  = min_i R_i(y)                                   worst-case optimisation
    UWO:   R_UWO(y)  = R_mean(y) − λ·Var_i R_i(y)                      uncertainty-weighted optimisation

and the policy is optimised against it by best-of-n (BoN; the unbiased estimator over one pool, KL_bon(n) =
log n − (n−1)/n, :mod:`labkit.substrates.rlhf`) or by PPO. The toy (the card's): responses y ∈ R^d from the "SFT policy"
N(0, I), gold reward r*(y) = wᵀy − c‖y‖², proxy RMs = ReLU MLPs trained by Bradley–Terry on (noisy) gold
preferences. The PPO part optimises a Gaussian policy N(μ, diag σ²) with the clipped surrogate and an analytic
KL(π ‖ N(0, I)) penalty, so its gold reward and KL are exact.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from labkit import viz
from labkit.core import ClaimCheck, Outcome, Param, RunContext, method_run
from labkit.data import preferences as prefs
from labkit.models.reward import (
    RewardEnsemble,
    RewardMLP,
    combine,
    flip_pairs,
    preference_accuracy,
    standardise,
    train_ensemble,
)
from labkit.substrates.rlhf import best_of_n_kl, clipped_surrogate_loss, unbiased_best_of_n

MAIN_METRIC = "gold_reward"
PARAMS = [
    Param(
        "lam",
        float,
        quick=0.5,
        low=0.0,
        high=10.0,
        help="UWO weight λ for best-of-n: mean − λ·Var over members (population variance, as the BoN code)",
    ),
    Param("noise", float, quick=0.25, low=0.0, high=0.5, help="label noise: share of preference pairs flipped"),
    Param("n_members", int, quick=5, low=2, high=20, help="ensemble size k (members differ only by seed)"),
    Param("n_pairs", int, quick=1000, full=4000, low=50, high=100_000, help="preference pairs from N(0, I) × N(0, I)"),
    Param(
        "max_n",
        int,
        quick=2048,
        full=8192,
        low=2,
        high=1_000_000,
        help="best-of-n up to this n (powers of two, 1 … max_n; at most pool_size)",
    ),
    Param(
        "pool_size",
        int,
        quick=20_000,
        full=50_000,
        low=2,
        high=10_000_000,
        main=False,
        help="BoN pool N drawn from N(0, I) per data seed (also the standardisation pool)",
    ),
    Param(
        "compare_noise",
        bool,
        quick=True,
        main=False,
        help="also train an ensemble on the same pairs with 0% label noise (skipped when noise = 0)",
    ),
    Param(
        "ppo",
        bool,
        quick=False,
        standard=True,
        full=True,
        main=False,
        help="also run PPO on a Gaussian policy against single, mean, WCO, UWO, for β_KL in {0, 0.01}",
    ),
    Param(
        "ppo_lam",
        float,
        quick=0.1,
        low=0.0,
        high=10.0,
        main=False,
        help="UWO λ for PPO (unbiased variance, as the PPO code; 0.1 in the released config)",
    ),
    Param("ppo_steps", int, quick=300, low=1, high=100_000, main=False, help="PPO iterations (one batch each)"),
    Param("ppo_batch", int, quick=256, low=2, high=100_000, main=False, help="samples per PPO iteration"),
    Param("ppo_epochs", int, quick=4, low=1, high=50, main=False, help="Adam steps on each batch"),
    Param("ppo_lr", float, quick=0.005, low=1e-5, high=1.0, log=True, main=False, help="PPO Adam learning rate"),
    Param("rm_steps", int, quick=300, low=1, high=100_000, main=False, help="Adam steps per reward model"),
    Param("rm_lr", float, quick=3e-3, low=1e-5, high=1.0, log=True, main=False, help="reward-model learning rate"),
    Param("rm_hidden", int, quick=32, low=1, high=4096, main=False, help="width of the RM's two hidden layers"),
    Param("dim", int, quick=8, low=1, high=1024, main=False, help="response dimension d"),
    Param("curvature", float, quick=0.15, low=0.0, high=10.0, main=False, help="c in r*(y) = wᵀy − c‖y‖²"),
    Param(
        "n_seeds",
        int,
        quick=1,
        standard=3,
        full=5,
        low=1,
        high=100,
        main=False,
        help="data seeds seed, seed+1, …: each draws w, pairs, labels, pool and its own k members",
    ),
]

RM_BATCH = 128
CLIP_EPS = 0.2
PPO_BETAS = (0.0, 0.01)
LAM_SWEEP = (0.1, 0.5, 1.0, 2.0)
TAIL_SCALE = 2.0  # test pairs for the "tail" accuracy come from N(0, TAIL_SCALE² I)
OBJECTIVES = ("single", "mean", "WCO", "UWO")


# --------------------------------------------------------------------------------------------- the objectives


def objective_scores(S: torch.Tensor, lam: float, unbiased: bool = False) -> dict[str, torch.Tensor]:
    """Standardised member scores ``S (k, N)`` → {"single": S[0], "mean", "WCO": min, "UWO": mean − λ·Var}."""
    return {
        "single": S[0],
        "mean": combine(S, "mean"),
        "WCO": combine(S, "wco"),
        "UWO": combine(S, "uwo", lam, unbiased),
    }


def powers_of_two(max_n: int) -> list[int]:
    """n = 1, 2, 4, …, up to max_n (and max_n itself if it is not a power of two)."""
    ns = [2**i for i in range(int(math.log2(max_n)) + 1)]
    return ns if ns[-1] == max_n else ns + [max_n]


def zscore(x: torch.Tensor) -> torch.Tensor:
    """(x − mean x)/std x over the pool (the last dim)."""
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-12)


def bon_curves(gold: torch.Tensor, score: torch.Tensor, ns) -> dict[str, np.ndarray]:
    """Best-of-n by ``score`` over one pool, for each n: E[gold], E[proxy_z], E[gold_z] and the gap.

    proxy_z and gold_z are the score and the gold reward z-scored over the pool, so both are 0 at n = 1 and the
    over-optimisation gap = E[proxy_z] − E[gold_z] is in pool-standard-deviation units."""
    est = unbiased_best_of_n(torch.stack([gold, zscore(score), zscore(gold)]), score.expand(3, -1), ns).numpy()
    return {"gold_reward": est[:, 0], "proxy_z": est[:, 1], "gold_z": est[:, 2], "gap": est[:, 1] - est[:, 2]}


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


def make_toy(seed: int, n_pairs: int, dim: int, pool_size: int, curvature: float, n_test: int = 2000) -> ToyData:
    """w ~ unit; pairs a, b ~ N(0, I), a ≻ b with P = σ(r*(a) − r*(b)); pool ~ N(0, I); test pairs from N(0, I)
    ("typical") and N(0, TAIL_SCALE² I) ("tail"), ordered by r* itself. All from ``Generator(seed)``."""
    gen = torch.Generator().manual_seed(int(seed))
    w = prefs.unit_direction(dim, gen)
    gold = lambda y: prefs.quadratic_gold_reward(y, w, curvature)  # noqa: E731
    a, b = torch.randn(n_pairs, dim, generator=gen), torch.randn(n_pairs, dim, generator=gen)
    chosen, rejected = prefs.order_pairs(a, b, prefs.bt_labels(gold(a), gold(b), gen))
    pool = torch.randn(pool_size, dim, generator=gen)
    tests = {}
    for name, scale in (("typical", 1.0), ("tail", TAIL_SCALE)):
        ta, tb = scale * torch.randn(n_test, dim, generator=gen), scale * torch.randn(n_test, dim, generator=gen)
        tests[name] = prefs.order_pairs(ta, tb, gold(ta) > gold(tb))
    return ToyData(w, chosen, rejected, pool, gold(pool), tests)


def train_members(p, data: ToyData, noise: float, seed: int) -> RewardEnsemble:
    """k RMs on the data's pairs with ``noise`` of them flipped (``Generator(seed + 10⁶)``, so the flips do not
    depend on k); member i has seed 1000·seed + i. Standardised over the pool."""
    chosen, rejected = data.chosen, data.rejected
    if noise > 0:
        chosen, rejected, _ = flip_pairs(chosen, rejected, noise, torch.Generator().manual_seed(int(seed) + 10**6))
    ens = train_ensemble(
        lambda: RewardMLP(p.dim, (p.rm_hidden, p.rm_hidden)),
        chosen,
        rejected,
        [1000 * seed + i for i in range(p.n_members)],
        steps=p.rm_steps,
        lr=p.rm_lr,
        batch_size=RM_BATCH,
    )
    return ens.fit_standardisation(data.pool)


def member_accuracy(ens: RewardEnsemble, tests: dict) -> dict[str, list[float]]:
    """Per member, the share of held-out pairs it orders like the gold reward: {"typical": [...], "tail": [...]}."""
    return {name: [preference_accuracy(m, *pair) for m in ens.members] for name, pair in tests.items()}


# --------------------------------------------------------------------------------------------- the Gaussian policy


def gaussian_logp(y: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log N(y; μ, diag σ²) = −Σ_j [(y_j − μ_j)²/(2σ_j²) + log σ_j + ½ log 2π]. ``(B, d)`` → ``(B,)``."""
    return -(((y - mu) / log_sigma.exp()) ** 2 / 2 + log_sigma + 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_j (σ_j² + μ_j² − 1 − 2 log σ_j)."""
    return 0.5 * ((2 * log_sigma).exp() + mu**2 - 1 - 2 * log_sigma).sum(-1)


def gaussian_gold(mu: torch.Tensor, log_sigma: torch.Tensor, w: torch.Tensor, curvature: float) -> torch.Tensor:
    """E_{y ~ N(μ, diag σ²)}[wᵀy − c‖y‖²] = wᵀμ − c(‖μ‖² + Σ_j σ_j²), exact."""
    return mu @ w - curvature * (mu.pow(2).sum(-1) + (2 * log_sigma).exp().sum(-1))


def gaussian_ppo_loss(y, old_logp, advantages, mu, log_sigma, beta_kl: float, clip_eps: float = CLIP_EPS):
    """mean_b −min(ρ_b A_b, clip(ρ_b, 1 ± ε) A_b) + β_KL·KL(π_θ ‖ N(0, I)),  ρ_b = π_θ(y_b)/π_old(y_b)."""
    surrogate = clipped_surrogate_loss(gaussian_logp(y, mu, log_sigma), old_logp, advantages, clip_eps).mean()
    return surrogate + beta_kl * gaussian_kl(mu, log_sigma)


def train_gaussian_ppo(reward_fn, w, p, beta_kl: float, seed: int, on_log=None, log_every: int = 10):
    """PPO on N(μ, diag σ²) from N(0, I): each iteration samples ``ppo_batch`` y, A = R(y) − mean R (the batch
    mean as baseline, reward units so β_KL keeps its meaning), then ``ppo_epochs`` Adam steps on
    :func:`gaussian_ppo_loss`. ``on_log(step, gold, proxy, kl)`` every ``log_every`` iterations and at the end;
    returns the last ``(gold, proxy, kl)``. Sampling uses ``Generator(seed)`` (shared by every arm)."""
    gen = torch.Generator().manual_seed(int(seed))
    mu = torch.zeros(len(w), requires_grad=True)
    log_sigma = torch.zeros(len(w), requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=p.ppo_lr)
    for step in range(p.ppo_steps + 1):
        with torch.no_grad():
            y = mu + log_sigma.exp() * torch.randn(p.ppo_batch, len(w), generator=gen)
            reward = reward_fn(y)
            old_logp = gaussian_logp(y, mu, log_sigma)
            stats = (
                float(gaussian_gold(mu, log_sigma, w, p.curvature)),
                float(reward.mean()),
                float(gaussian_kl(mu, log_sigma)),
            )
        if on_log is not None and (step % log_every == 0 or step == p.ppo_steps):
            on_log(step, *stats)
        if step == p.ppo_steps:
            return stats
        adv = reward - reward.mean()
        for _ in range(p.ppo_epochs):
            loss = gaussian_ppo_loss(y, old_logp, adv, mu, log_sigma, beta_kl)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def ppo_rewards(ens: RewardEnsemble, lam: float) -> dict:
    """Reward functions y → score for PPO: single (member 0 alone), mean, WCO, UWO (unbiased variance)."""
    single = RewardEnsemble(ens.members[:1], ens.mean[:1], ens.std[:1])
    return {
        "single": lambda y: single.score(y, "mean"),
        "mean": lambda y: ens.score(y, "mean"),
        "WCO": lambda y: ens.score(y, "wco"),
        "UWO": lambda y: ens.score(y, "uwo", lam, unbiased=True),
    }


# --------------------------------------------------------------------------------------------- claim checks


def peak_drop(gold_curves) -> np.ndarray:
    """Per seed: max_n gold − gold(n_max) (≥ 0). ``gold_curves (seeds, len(ns))``."""
    g = np.atleast_2d(np.asarray(gold_curves, float))
    return g.max(1) - g[:, -1]


def overoptimisation_claim(single, n_max: int, drop: float = 0.2) -> ClaimCheck:
    """Single RM over-optimises: in every seed gold(n_max) ≤ max_n gold − ``drop``."""
    drops = peak_drop(single)
    return ClaimCheck(
        claim=f"single-RM best-of-n over-optimises: gold(n={n_max}) ≤ max_n gold − {drop:g} in every data seed",
        passed=bool((drops >= drop).all()),
        numbers={
            "min_drop": float(drops.min()),
            "mean_drop": float(drops.mean()),
            "n_seeds": len(drops),
            **{f"drop_seed{i}": float(d) for i, d in enumerate(drops)},
        },
    )


def ensemble_claim(single, wco, uwo, n_max: int, margin: float | None = None) -> ClaimCheck:
    """WCO and UWO each beat the single RM at n_max by ≥ ``margin`` on the mean over seeds (per-seed gaps
    reported). Default margin: 0.25 for one seed, 0.4 for several (the card's quick / standard)."""
    final = lambda c: np.atleast_2d(np.asarray(c, float))[:, -1]  # noqa: E731
    s, gw, gu = final(single), final(wco) - final(single), final(uwo) - final(single)
    margin = (0.25 if len(s) == 1 else 0.4) if margin is None else margin
    return ClaimCheck(
        claim=f"ensembles help: gold(n={n_max}) of WCO and of UWO each ≥ single RM + {margin:g}"
        f" (mean over {len(s)} data seed{'s' if len(s) > 1 else ''})",
        passed=bool(gw.mean() >= margin and gu.mean() >= margin),
        numbers={
            "wco_minus_single": float(gw.mean()),
            "uwo_minus_single": float(gu.mean()),
            "worst_seed_wco": float(gw.min()),
            "worst_seed_uwo": float(gu.min()),
            "gold_single": float(s.mean()),
            "gold_wco": float(final(wco).mean()),
            "gold_uwo": float(final(uwo).mean()),
        },
    )


def mean_between_claim(single, mean, wco, uwo, n_max: int) -> ClaimCheck:
    """Reported: the mean ensemble's gold(n_max) lies between the single RM's and the lower of WCO/UWO."""
    f = lambda c: float(np.atleast_2d(np.asarray(c, float))[:, -1].mean())  # noqa: E731
    lo, hi = f(single), min(f(wco), f(uwo))
    return ClaimCheck(
        claim=f"the mean ensemble lies in between: single ≤ mean ≤ min(WCO, UWO) at n={n_max}",
        passed=bool(lo <= f(mean) <= hi),
        numbers={"mean_minus_single": f(mean) - lo, "gold_mean": f(mean)},
        asserted=False,
    )


def ppo_claim(final_gold: dict) -> ClaimCheck:
    """Reported: PPO's final gold (mean over seeds) of WCO and UWO ≥ the single RM's, for every β_KL.
    ``final_gold[(objective, beta)] = [per seed]``."""
    nums, ok = {}, True
    for beta in sorted({b for _, b in final_gold}):
        s = float(np.mean(final_gold[("single", beta)]))
        for obj in ("WCO", "UWO"):
            gap = float(np.mean(final_gold[(obj, beta)])) - s
            nums[f"{obj.lower()}_minus_single_beta{beta:g}"] = gap
            ok &= gap >= 0
    return ClaimCheck(
        claim="PPO: final gold of WCO and of UWO ≥ single RM's, for every β_KL (mean over seeds)",
        passed=bool(ok),
        numbers=nums,
        asserted=False,
    )


# --------------------------------------------------------------------------------------------- figures


def curve_table(hist, metric: str):
    """Mean over seeds of ``metric``: a frame indexed by n (the BoN step), one column per series."""
    rows = hist[hist["metric"] == metric]
    return rows.groupby(["series", "step"])["value"].mean().unstack("series")


def kl_figure(result, metric: str, title: str, ylabel: str):
    """``metric`` against KL_bon(n) per series; 0%-noise series dashed."""
    table = curve_table(result.history, metric)
    order = [s for s in result.extras["series"] if s in table.columns]
    fig = viz.lines(
        [best_of_n_kl(int(n)) for n in table.index],
        {s: table[s].values for s in order},
        mode="lines+markers",
        title=title,
        xlabel="KL_bon(n) = log n − (n−1)/n  (nats)",
        ylabel=ylabel,
    )
    colours = viz.color_map([s.split(" · ")[0] for s in order])
    for trace in fig.data:
        trace.line.update(color=colours[trace.name.split(" · ")[0]], dash="dash" if " · " in trace.name else None)
    return fig


def make_figures(result) -> dict:
    x = result.extras
    figs = {
        "gold_vs_kl": kl_figure(
            result,
            "gold_reward",
            "Best-of-n: gold reward against KL (mean over data seeds; dashed: 0% label noise)",
            "E[r*(best of n)]",
        ),
        "proxy_vs_kl": kl_figure(
            result, "proxy_z", "Best-of-n: the optimised (proxy) score, z-scored over the pool", "E[proxy_z]"
        ),
        "gap": kl_figure(result, "gap", "Over-optimisation gap: proxy_z − gold_z (pool-std units)", "gap"),
        "rm_accuracy": viz.bars(
            x["accuracy_bars"],
            title="Per-member accuracy on held-out pairs ordered by r*"
            " (typical: N(0, I); tail: N(0, 4I)); dots: data seeds",
            ylabel="accuracy",
        ),
        "disagreement": viz.lines(
            x["disagreement"]["norm"],
            {"std across members": x["disagreement"]["std"]},
            mode="markers",
            title="Ensemble disagreement grows in the tails (first data seed)",
            xlabel="‖y‖",
            ylabel="std_i of standardised R_i(y)",
        ),
    }
    lam = x["lam_sweep"]
    figs["uwo_lambda"] = viz.lines(
        [best_of_n_kl(n) for n in x["ns"]],
        {f"UWO λ={k}": v for k, v in lam.items()},
        mode="lines+markers",
        title="UWO: gold reward against KL_bon for several λ",
        xlabel="KL_bon(n) (nats)",
        ylabel="E[r*(best of n)]",
    )
    if "ppo_final" in x:
        figs["ppo_gold_vs_kl"] = ppo_figure(
            result.history,
            "ppo_gold",
            "PPO: gold reward against KL(π‖N(0, I)) along training (mean over seeds)",
            "E_π[r*] (exact)",
        )
        figs["ppo_proxy_vs_kl"] = ppo_figure(
            result.history, "ppo_proxy", "PPO: the optimised proxy score against KL", "mean proxy score of the batch"
        )
    return figs


def ppo_figure(hist, metric: str, title: str, ylabel: str):
    """``metric`` against the exact KL along PPO training, one line per (objective, β_KL); β_KL > 0 dashed."""
    import plotly.graph_objects as go

    means = hist[hist["metric"].isin([metric, "ppo_kl"])].groupby(["series", "metric", "step"])["value"].mean()
    names = list(dict.fromkeys(hist.loc[hist["metric"] == metric, "series"]))
    colours = viz.color_map([n.split(" β")[0] for n in names])
    fig = viz.lines([], {}, title=title, xlabel="KL(π ‖ N(0, I)) (nats)", ylabel=ylabel)
    for n in names:
        fig.add_trace(
            go.Scatter(
                x=means[n]["ppo_kl"].values,
                y=means[n][metric].values,
                mode="lines",
                name=n,
                line={"color": colours[n.split(" β")[0]], "dash": None if n.endswith("β_KL=0") else "dash"},
            )
        )
    return fig


# --------------------------------------------------------------------------------------------- the experiment


def log_curves(ctx: RunContext, ns, curves: dict, series: str, seed: int) -> None:
    """History rows of one BoN curve set: step = n; metrics gold_reward, proxy_z, gold_z, gap, kl_bon."""
    for j, n in enumerate(ns):
        for metric, values in curves.items():
            ctx.history.log(n, series, metric, values[j], seed=seed)
        ctx.history.log(n, series, "kl_bon", best_of_n_kl(n), seed=seed)


def bon_for_ensemble(ens: RewardEnsemble, data: ToyData, ns, lam: float) -> dict:
    """BoN curves per objective, plus "single (mean of k)": the single-RM curves averaged over the k members."""
    S = standardise(ens.member_scores(data.pool), ens.mean, ens.std)
    out = {name: bon_curves(data.gold_pool, score, ns) for name, score in objective_scores(S, lam).items()}
    each = [bon_curves(data.gold_pool, S[i], ns) for i in range(len(S))]
    out["single (mean of k)"] = {m: np.mean([c[m] for c in each], 0) for m in each[0]}
    return out


def summarise(per_seed: dict, ns) -> dict[str, float]:
    """Final metrics: means over seeds of gold(n_max), peak gold and drop per series (main noise rate)."""
    out = {}
    for name, curves in per_seed.items():
        key = re.sub(r"[^a-z0-9]+", "_", name.lower().replace("%", "pct")).strip("_")
        g = np.stack([c["gold_reward"] for c in curves])
        out[f"gold_{key}"] = float(g[:, -1].mean())
        out[f"peak_drop_{key}"] = float(peak_drop(g).mean())
        out[f"gap_{key}"] = float(np.mean([c["gap"][-1] for c in curves]))
    return out


@method_run(PARAMS, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext) -> Outcome:
    p = ctx.p
    if p.max_n > p.pool_size:
        raise ValueError(f"max_n={p.max_n} is larger than pool_size={p.pool_size}: best-of-n needs n ≤ N")
    seeds = [ctx.seed + k for k in range(p.n_seeds)]
    ns = powers_of_two(p.max_n)
    rates = [(p.noise, "")] + ([(0.0, " · 0% noise")] if p.compare_noise and p.noise > 0 else [])
    n_ppo = len(OBJECTIVES) * len(PPO_BETAS) if p.ppo else 0
    bar = ctx.bar(len(seeds) * (len(rates) + n_ppo), f"RM ensembles: {len(seeds)} data seed(s)")
    per_seed = {}  # series → list of curve dicts (one per seed)
    acc = {"typical": [], "tail": []}
    lam_sweep = {f"{lam:g}": [] for lam in LAM_SWEEP}
    ppo_final, disagreement = {}, None
    for seed in seeds:
        data = make_toy(seed, p.n_pairs, p.dim, p.pool_size, p.curvature)
        for rate, suffix in rates:
            ens = train_members(p, data, rate, seed)
            for name, curves in bon_for_ensemble(ens, data, ns, p.lam).items():
                ctx.check(float(np.sum(curves["gold_reward"])), p.rm_steps, name + suffix)
                per_seed.setdefault(name + suffix, []).append(curves)
                log_curves(ctx, ns, curves, name + suffix, seed)
            bar.update(1)
            if suffix:
                continue
            for name, values in member_accuracy(ens, data.tests).items():
                acc[name].append(values)
            S = standardise(ens.member_scores(data.pool), ens.mean, ens.std)
            for lam in LAM_SWEEP:
                lam_sweep[f"{lam:g}"].append(bon_curves(data.gold_pool, combine(S, "uwo", lam), ns)["gold_reward"])
            if disagreement is None:
                k = min(2000, p.pool_size)
                disagreement = {"norm": data.pool[:k].norm(dim=-1).tolist(), "std": S[:, :k].std(0).tolist()}
            if p.ppo:
                for name, reward_fn in ppo_rewards(ens, p.ppo_lam).items():
                    for beta in PPO_BETAS:
                        series = f"PPO {name} β_KL={beta:g}"

                        def on_log(step, gold, proxy, kl, series=series):
                            ctx.check(gold + proxy + kl, step, series)
                            for metric, value in (("ppo_gold", gold), ("ppo_proxy", proxy), ("ppo_kl", kl)):
                                ctx.history.log(step, series, metric, value, seed=seed)

                        gold, _, _ = train_gaussian_ppo(reward_fn, data.w, p, beta, seed + 2 * 10**6, on_log)
                        ppo_final.setdefault((name, beta), []).append(gold)
                        bar.update(1)
    bar.close()
    gold = {name: np.stack([c["gold_reward"] for c in curves]) for name, curves in per_seed.items()}
    claims = [
        overoptimisation_claim(gold["single"], ns[-1]),
        ensemble_claim(gold["single"], gold["WCO"], gold["UWO"], ns[-1]),
        mean_between_claim(gold["single"], gold["mean"], gold["WCO"], gold["UWO"], ns[-1]),
    ]
    if rates[1:]:
        suffix = rates[1][1]
        clean = ensemble_claim(gold["single" + suffix], gold["WCO" + suffix], gold["UWO" + suffix], ns[-1])
        clean.claim = "without label noise (0%): " + clean.claim
        clean.asserted = False
        claims.append(clean)
    metrics = summarise(per_seed, ns)
    if p.ppo:
        claims.append(ppo_claim(ppo_final))
        metrics.update({f"ppo_gold_{o.lower()}_beta{b:g}": float(np.mean(v)) for (o, b), v in ppo_final.items()})
    k = p.n_members
    acc_arr = {name: np.asarray(v) for name, v in acc.items()}  # (seeds, k)
    extras = {
        "ns": ns,
        "seeds": seeds,
        "series": list(per_seed),
        "lam": p.lam,
        "gold_table": {name: g.tolist() for name, g in gold.items()},
        "lam_sweep": {lam: np.mean(v, 0).tolist() for lam, v in lam_sweep.items()},
        "accuracy": {name: v.tolist() for name, v in acc_arr.items()},
        "accuracy_bars": {
            f"RM {i + 1} · {name}": acc_arr[name][:, i].tolist() for name in ("typical", "tail") for i in range(k)
        },
        "disagreement": disagreement,
    }
    if p.ppo:
        extras["ppo_final"] = {f"{o} β_KL={b:g}": v for (o, b), v in ppo_final.items()}
    metrics.update({f"rm_acc_{name}": float(v.mean()) for name, v in acc_arr.items()})
    return Outcome(metrics=metrics, claims=claims, extras=extras)

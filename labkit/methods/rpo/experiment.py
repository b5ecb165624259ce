"""RPO (arXiv 2405.16436): DPO plus an SFT term on the chosen responses mitigates over-optimisation.

With Δ(y) = log π_θ(y) − log π_ref(y) (log-probs summed over tokens),
    L_DPO = −log σ(β Δ(y_w) − β Δ(y_l)),        L_RPO = L_DPO − η·β·log π_θ(y_w)   ("cumulative SFT").
The paper derives the SFT term as the DPO re-parameterisation of an adversarial reward penalty: maximise
the value against the worst reward that still fits the preferences, measured relative to the chosen
responses' distribution. Here both are trained on a gold-reward bandit (:mod:`labkit.data.preferences`)
with the log-linear tilted policy π_θ(a) ∝ π_ref(a)·exp(θ·φ(a)) and exact expectations over all K.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from labkit import viz
from labkit.core import ClaimCheck, Outcome, Param, RunContext, method_run
from labkit.data import preferences as prefs
from labkit.substrates.preference import dpo_loss

PARAMS = [
    Param("eta", float, quick=1.0, low=0.0, high=100.0, help="RPO weight η: loss − η·β·log π(y_w); η = 0 is DPO"),
    Param("beta", float, quick=0.1, low=1e-3, high=10.0, log=True, help="DPO temperature β"),
    Param(
        "n_pairs",
        int,
        quick=300,
        full=3000,
        low=10,
        high=100_000,
        help="preference pairs N drawn from π_ref × π_ref (ties dropped)",
    ),
    Param(
        "ref_width",
        float,
        quick=1.0,
        low=0.05,
        high=20.0,
        log=True,
        help="coverage width of π_ref ∝ exp(−‖φ‖²/width): larger covers far-out responses",
    ),
    Param("eta_high", float, quick=5.0, low=0.0, high=100.0, main=False, help="η of the second, stronger RPO arm"),
    Param(
        "n_responses",
        int,
        quick=200,
        standard=2000,
        full=10_000,
        low=2,
        high=1_000_000,
        main=False,
        help="K responses in the bandit",
    ),
    Param("dim", int, quick=8, standard=16, full=32, low=1, high=1024, main=False, help="feature dimension d"),
    Param(
        "n_seeds",
        int,
        quick=10,
        full=100,
        low=1,
        high=1000,
        main=False,
        help="independent problems (seed, seed+1, …): new bandit, pairs and labels; all arms share them",
    ),
    Param("n_steps", int, quick=2000, low=1, high=100_000, main=False, help="full-batch Adam steps"),
    Param("lr", float, quick=0.05, low=1e-5, high=1.0, log=True, main=False, help="Adam learning rate"),
    Param(
        "log_every",
        int,
        quick=100,
        low=1,
        high=100_000,
        main=False,
        help="log every this many steps (and 20× denser during the first log_every steps)",
    ),
    Param(
        "support_mass",
        float,
        quick=0.99,
        low=0.5,
        high=0.999999,
        main=False,
        help="π_ref's support = the fewest most-probable responses holding this much π_ref mass",
    ),
    Param(
        "sweep", bool, quick=True, main=False, help="also train a β × η grid (final numbers only) to show the trade-off"
    ),
]

MAIN_METRIC = "gold_reward"
SWEEP_BETAS = (0.03, 0.1, 0.3)
SWEEP_ETAS = (0.0, 0.1, 0.3, 1.0, 3.0, 5.0, 20.0)
METRICS = ("gold_reward", "logp_chosen", "logp_rejected", "sq_norm", "kl", "mass_out")


# --- the losses (per example: each returns a tensor shaped like its inputs; take the mean yourself) ------
# dpo_loss lives in labkit.substrates.preference (shared by the DPO-family methods); imported above.


def rpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, eta):
    """L_RPO = L_DPO − η·β·log π(y_w), per example; log π(y_w) is the SUM over the response's tokens
    (the official "cumulative SFT" trainer). η = 0 gives DPO; the SFT term uses the chosen response only."""
    dpo = dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    return dpo - eta * beta * policy_chosen_logps


def rpo_average_loss(
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, rpo_alpha, chosen_lengths
):
    """TRL-style average variant (``DPOConfig(rpo_alpha=α)``, OpenRLHF ``nll_loss_coef``), per example:
    L = L_DPO + α·(−log π(y_w) / |y_w|), the token-MEAN NLL of the chosen response. Same as
    :func:`rpo_loss` with η·β = α/|y_w|, i.e. only up to the length normalisation."""
    dpo = dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    return dpo - rpo_alpha * policy_chosen_logps / chosen_lengths


# --- the claim checks (pure functions of per-seed numbers) ------------------------------------------------


def gold_claim(gold_dpo, gold_rpo, eta: float, margin: float = 1.0, min_frac: float = 0.8) -> ClaimCheck:
    """Final gold reward: mean over seeds of (RPO − DPO) ≥ ``margin`` and RPO ≥ DPO in ≥ ``min_frac`` of seeds."""
    gold_dpo, gold_rpo = np.asarray(gold_dpo, float), np.asarray(gold_rpo, float)
    gap, wins, n = float(np.mean(gold_rpo - gold_dpo)), int(np.sum(gold_rpo >= gold_dpo)), len(gold_dpo)
    need = math.ceil(min_frac * n - 1e-9)
    return ClaimCheck(
        claim=f"final gold reward: RPO(η={eta:g}) − DPO ≥ {margin:g} on average and RPO ≥ DPO in ≥ {need}/{n} seeds",
        passed=bool(gap >= margin and wins >= need),
        numbers={
            "mean_gap": gap,
            "seeds_rpo_ge_dpo": wins,
            "n_seeds": n,
            "gold_dpo": float(gold_dpo.mean()),
            "gold_rpo": float(gold_rpo.mean()),
        },
    )


def likelihood_claim(change_dpo, change_rpo, eta: float, drop: float = 10.0, tol: float = 1.0) -> ClaimCheck:
    """Mean log π(y_w), final − initial per seed: DPO's mean change < −``drop`` nats and RPO's mean |change|
    < ``tol`` nats."""
    change_dpo, change_rpo = np.asarray(change_dpo, float), np.asarray(change_rpo, float)
    dpo_change, rpo_abs = float(change_dpo.mean()), float(np.abs(change_rpo).mean())
    return ClaimCheck(
        claim=f"mean log π(y_w): DPO drops by > {drop:g} nats while RPO(η={eta:g}) changes by < {tol:g} nat",
        passed=bool(dpo_change < -drop and rpo_abs < tol),
        numbers={
            "dpo_change": dpo_change,
            "rpo_abs_change": rpo_abs,
            "rpo_change": float(change_rpo.mean()),
            "dpo_worst_seed": float(change_dpo.max()),
            "rpo_worst_seed": float(np.abs(change_rpo).max()),
        },
    )


# --- training: every (arm, seed) has its own θ; one full-batch Adam over all of them ---------------------


def log_schedule(n_steps: int, log_every: int) -> list[int]:
    """Steps to log: 0, every ⌈log_every/20⌉ up to log_every (the early hump), every log_every, and the last."""
    early = max(1, log_every // 20)
    steps = set(range(0, min(log_every, n_steps) + 1, early)) | set(range(0, n_steps + 1, log_every))
    return sorted(steps | {n_steps})


def policy_metrics(logp, bandit, pairs, support) -> dict[str, torch.Tensor]:
    """E_π[r*], mean log π(y_w), mean log π(y_l), E_π‖φ‖², KL(π‖π_ref), π(outside support); each (A, S)."""
    chosen, rejected = prefs.gather_pairs(logp, pairs)
    return {
        "gold_reward": prefs.expectation(logp, bandit.gold),
        "logp_chosen": prefs.masked_mean(chosen, pairs.mask),
        "logp_rejected": prefs.masked_mean(rejected, pairs.mask),
        "sq_norm": prefs.expectation(logp, bandit.features.pow(2).sum(-1)),
        "kl": prefs.kl_divergence(logp, bandit.ref_logp),
        "mass_out": prefs.expectation(logp, (~support).to(logp.dtype)),
    }


def arm_losses(logp, pairs, ref_pairs, betas, etas):
    """Mean L_RPO over each (arm, seed)'s kept pairs, ``(A, S)``; η = 0 arms are DPO."""
    chosen, rejected = prefs.gather_pairs(logp, pairs)
    per_pair = rpo_loss(chosen, rejected, *ref_pairs, betas.view(-1, 1, 1), etas.view(-1, 1, 1))
    return prefs.masked_mean(per_pair, pairs.mask)


def train_arms(bandit, pairs, betas, etas, n_steps, lr, log_steps, support, on_step=None, on_log=None):
    """Full-batch Adam on θ ∈ R^{A×S×d} from θ = 0 (π = π_ref). The summed loss separates, so each (arm, seed)
    gets exactly the gradient and Adam update of its own run. Returns the metrics at ``log_steps``, ``(T, A, S)``
    numpy arrays, and the final log-probs ``(A, S, K)``. ``on_log(step, metrics)`` sees each logged step."""
    theta = torch.zeros(len(betas), *bandit.w_star.shape, device=bandit.features.device, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    ref_pairs = prefs.gather_pairs(bandit.ref_logp, pairs)
    logged, wanted = [], set(log_steps)
    for step in range(n_steps + 1):
        logp = prefs.tilted_log_probs(theta, bandit.features, bandit.ref_logp)
        if step in wanted:
            with torch.no_grad():
                logged.append({k: v.cpu().numpy() for k, v in policy_metrics(logp, bandit, pairs, support).items()})
            if on_log is not None:
                on_log(step, logged[-1])
        if step == n_steps:
            break
        losses = arm_losses(logp, pairs, ref_pairs, betas, etas)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        if on_step is not None:
            on_step(step + 1, losses.detach())
    series = {k: np.stack([m[k] for m in logged]).astype(np.float64) for k in METRICS}
    return series, logp.detach()


# --- the experiment ----------------------------------------------------------------------------------------


def arm_names(p) -> list[str]:
    """ "DPO", "RPO η=<eta>", "RPO η=<eta_high>" (marked "(eta_high)" when the two η are equal)."""
    names = ["DPO", f"RPO η={p.eta:g}", f"RPO η={p.eta_high:g}"]
    return names if names[1] != names[2] else names[:2] + [names[2] + " (eta_high)"]


def check_arms(ctx: RunContext, losses, step: int, names) -> None:
    """One sync per step: if the summed loss is NaN/inf, name the first arm that diverged."""
    if math.isfinite(float(losses.sum())):
        return
    for name, arm_loss in zip(names, losses):
        ctx.check(arm_loss.sum(), step, name)


def log_step(ctx: RunContext, step: int, metrics, names, seeds) -> None:
    """History rows of one logged step for the named arms (the first ``len(names)``)."""
    for a, name in enumerate(names):
        for s, seed in enumerate(seeds):
            for metric in METRICS:
                ctx.history.log(step, name, metric, metrics[metric][a, s], seed=seed)


def sweep_frame(series, betas, etas, seeds):
    """Final numbers of the β × η grid as a tidy frame (beta, eta, seed, gold_reward, logp_chosen, kl, ...)."""
    import pandas as pd

    rows = [
        {"beta": b, "eta": e, "seed": seed, **{m: float(series[m][-1, a, s]) for m in METRICS}}
        for a, (b, e) in enumerate(zip(betas, etas))
        for s, seed in enumerate(seeds)
    ]
    return pd.DataFrame(rows)


def make_figures(result) -> dict:
    """Gold reward, log π(y_w)/log π(y_l), E‖φ‖², KL vs gold, mass outside support, policy mass of seed 0."""
    hist, x = result.history, result.extras
    names = x["arms"]
    figs = {"gold_reward": curves_log_step(hist, "gold_reward", "Gold reward E_π[r*] (step on a log axis)")}
    figs["gold_reward"].add_hline(y=x["gold_reference"], line_dash="dot", annotation_text="π_ref")
    figs["logp"] = chosen_rejected_figure(hist, names)
    figs["sq_norm"] = curves_log_step(hist, "sq_norm", "E_π‖φ‖²: how far out the policy goes")
    figs["kl_vs_gold"] = kl_gold_figure(hist, names)
    figs["support_mass"] = viz.bars(
        {"π_ref": x["mass_out_reference"], **x["mass_out_final"]},
        title=f"Mass outside π_ref's support ({x['support_mass']:g} of π_ref's mass; the rest is inside)",
        ylabel="π(a outside support)",
    )
    figs["policy_mass"] = viz.lines(
        x["seed0"]["norm"],
        x["seed0"]["probs"],
        mode="markers",
        title=f"Final π(a) against ‖φ(a)‖, seed {result.seed}",
        xlabel="‖φ(a)‖",
        ylabel="π(a)",
    )
    figs["policy_mass"].update_yaxes(type="log")
    if "sweep" in x:
        figs["tradeoff"] = tradeoff_figure(x["sweep"], x["gold_reference"])
    return figs


def curves_log_step(hist, metric, title):
    fig = viz.curves(hist, metric, title=title)
    fig.update_xaxes(type="log")
    return fig


def chosen_rejected_figure(hist, names):
    """log π(y_w) (solid) and log π(y_l) (dashed) per arm, mean over seeds."""
    rows = hist[hist["metric"].isin(["logp_chosen", "logp_rejected"])].copy()
    rows["series"] = rows["series"] + np.where(rows["metric"] == "logp_chosen", " · y_w", " · y_l")
    rows["metric"] = "logp"
    order = [f"{n} · {w}" for n in names for w in ("y_w", "y_l")]
    fig = viz.curves(
        rows,
        "logp",
        series=order,
        title="Mean log π(y_w) (solid) and log π(y_l) (dashed), step on a log axis",
        ylabel="log-prob (nats)",
        band=False,
    )
    colours = viz.color_map(names)
    for trace in fig.data:
        arm, which = trace.name.rsplit(" · ", 1)
        trace.line.update(color=colours[arm], dash="dash" if which == "y_l" else None)
    fig.update_xaxes(type="log")
    return fig


def kl_gold_figure(hist, names):
    """The path of (KL(π‖π_ref), E_π[r*]) over training, mean over seeds, one line per arm."""
    import plotly.graph_objects as go

    means = hist[hist["metric"].isin(["kl", "gold_reward"])].groupby(["series", "metric", "step"])["value"].mean()
    colours = viz.color_map(names)
    fig = viz.lines(
        [], {}, title="Gold reward against KL(π‖π_ref) along training", xlabel="KL(π‖π_ref) (nats)", ylabel="E_π[r*]"
    )
    for name in names:
        fig.add_trace(
            go.Scatter(
                x=means[name]["kl"].values,
                y=means[name]["gold_reward"].values,
                mode="lines+markers",
                name=name,
                line={"color": colours[name]},
            )
        )
    fig.update_xaxes(type="log")
    return fig


def tradeoff_figure(sweep, gold_reference):
    """Final gold reward (mean over seeds) against η, one line per β."""
    table = sweep.groupby(["beta", "eta"])["gold_reward"].mean().unstack("beta")
    fig = viz.lines(
        [f"{e:g}" for e in table.index],
        {f"β={b:g}": table[b].values for b in table.columns},
        mode="lines+markers",
        title="Final gold reward against η (η = 0 is DPO)",
        xlabel="η",
        ylabel="E_π[r*]",
    )
    fig.add_hline(y=gold_reference, line_dash="dot", annotation_text="π_ref")
    return fig


def extras_for(p, names, seeds, series, final_logp, bandit, support, pairs, sweep=None) -> dict:
    """What the notebook and figures need: arms, per-seed finals, seed 0's responses and final policies."""
    ref_probs = bandit.ref_logp[0].exp()
    out = {
        "arms": names,
        "seeds": list(seeds),
        "support_mass": p.support_mass,
        "gold_reference": float(series["gold_reward"][0, 0].mean()),
        "mass_out_reference": series["mass_out"][0, 0].tolist(),
        "mass_out_final": {n: series["mass_out"][-1, a].tolist() for a, n in enumerate(names)},
        "final": {m: {n: series[m][-1, a].tolist() for a, n in enumerate(names)} for m in METRICS},
        "support_size": support.sum(-1).tolist(),
        "pairs_kept": pairs.counts.tolist(),
        "seed0": {
            "norm": bandit.features[0].norm(dim=-1).cpu().tolist(),
            "gold": bandit.gold[0].cpu().tolist(),
            "probs": {
                "π_ref": ref_probs.cpu().tolist(),
                **{n: final_logp[a, 0].exp().cpu().tolist() for a, n in enumerate(names)},
            },
        },
    }
    if sweep is not None:
        out["sweep"] = sweep
    return out


def final_metrics(series, names) -> dict[str, float]:
    """Means over seeds of the final numbers, plus DPO's peak gold (over logged steps)."""
    keys = ("dpo", "rpo", "rpo_high")
    out = {
        "gold_reference": float(series["gold_reward"][0, 0].mean()),
        "gold_peak_dpo": float(series["gold_reward"][:, 0].mean(-1).max()),
    }
    for a, key in enumerate(keys):
        out[f"gold_{key}"] = float(series["gold_reward"][-1, a].mean())
        out[f"logp_chosen_change_{key}"] = float((series["logp_chosen"][-1, a] - series["logp_chosen"][0, a]).mean())
        out[f"kl_{key}"] = float(series["kl"][-1, a].mean())
        out[f"mass_out_{key}"] = float(series["mass_out"][-1, a].mean())
    out["gold_gap_rpo_minus_dpo"] = out["gold_rpo"] - out["gold_dpo"]
    return out


@method_run(PARAMS, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext) -> Outcome:
    p = ctx.p
    seeds = [ctx.seed + k for k in range(p.n_seeds)]
    bandit = prefs.make_gold_bandit(p.n_responses, p.dim, seeds, p.ref_width).to(ctx.device)
    pairs = prefs.sample_bt_pairs(bandit.gold, bandit.ref_logp, p.n_pairs, seeds).to(ctx.device)
    support = prefs.support_mask(bandit.ref_logp, p.support_mass)
    names, steps = arm_names(p), log_schedule(p.n_steps, p.log_every)
    betas = [p.beta] * 3
    etas = [0.0, p.eta, p.eta_high]
    if p.sweep:
        betas += [b for b in SWEEP_BETAS for _ in SWEEP_ETAS]
        etas += [e for _ in SWEEP_BETAS for e in SWEEP_ETAS]
    bar = ctx.bar(p.n_steps, f"DPO + RPO, {len(betas)} arms × {len(seeds)} seeds")

    all_names = names + [f"sweep β={b:g} η={e:g}" for b, e in zip(betas[3:], etas[3:])]

    def on_step(step, losses):
        check_arms(ctx, losses, step, all_names)
        bar.update(1)

    as_tensor = lambda v: torch.tensor(v, device=ctx.device)  # noqa: E731
    series, final_logp = train_arms(
        bandit,
        pairs,
        as_tensor(betas),
        as_tensor(etas),
        p.n_steps,
        p.lr,
        steps,
        support,
        on_step,
        lambda step, m: log_step(ctx, step, m, names, seeds),
    )
    bar.close()
    main = {k: v[:, :3] for k, v in series.items()}
    sweep = sweep_frame({k: v[:, 3:] for k, v in series.items()}, betas[3:], etas[3:], seeds) if p.sweep else None
    extras = extras_for(p, names, seeds, main, final_logp, bandit, support, pairs, sweep)
    change = main["logp_chosen"][-1] - main["logp_chosen"][0]
    claims = [
        gold_claim(main["gold_reward"][-1, 0], main["gold_reward"][-1, 1], p.eta),
        likelihood_claim(change[0], change[1], p.eta),
    ]
    return Outcome(metrics=final_metrics(main, names), claims=claims, extras=extras)

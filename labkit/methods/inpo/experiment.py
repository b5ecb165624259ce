"""INPO (arXiv 2407.00617): Iterative Nash Policy Optimization for general, possibly intransitive preferences.

The target is the Nash policy of the symmetric game "whose response is preferred", regularised towards π_ref.
INPO runs online mirror descent (OMD) against its own previous iterate,
    π_{t+1}(y) ∝ π_t(y)^{1−ητ} · π_ref(y)^{ητ} · exp(η·P(y ≻ π_t)),
and learns each step from ordinary (winner, loser) pairs sampled from π_t with a squared loss
    h_t = [log π_θ(y_w) − log π_θ(y_l)] − ητ·[log π_ref(y_w) − log π_ref(y_l)] − (1−ητ)·[log π_t(y_w) − log π_t(y_l)]
    L̂_t(θ) = mean over pairs of (h_t − η/2)²,
whose population minimiser is exactly the OMD step (no per-response win rate needs estimating).

The toy here is the card's tabular "LLM": M prompts, K responses each, π_θ = softmax of a logit table, and a
preference matrix per prompt with a rock-paper-scissors cycle on responses 0–2 (no Bradley–Terry reward fits it).
Iterative DPO with reference π_t is the baseline; everything (exploitability, win rates, KL) is exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from labkit import viz
from labkit.core import ClaimCheck, Outcome, Param, RunContext, method_run
from labkit.data import preferences as prefs
from labkit.substrates.preference import dpo_loss

MAIN_METRIC = "exploitability"
PARAMS = [
    Param(
        "eta",
        float,
        quick=2.0,
        low=1e-3,
        high=100.0,
        log=True,
        help="OMD step η (the target of the squared loss is η/2; the original code's `eta` is 1/η)",
    ),
    Param(
        "tau",
        float,
        quick=0.05,
        low=0.0,
        high=10.0,
        help="KL regularisation τ towards π_ref (ητ ≤ 1; the code's `ratio` is ητ)",
    ),
    Param("beta", float, quick=0.1, low=1e-3, high=10.0, log=True, help="iterative DPO's temperature β"),
    Param(
        "n_pairs",
        int,
        quick=512,
        standard=1024,
        full=4096,
        low=8,
        high=1_000_000,
        help="oracle-labelled pairs per prompt per iteration, drawn from π_t (ties y = y' dropped)",
    ),
    Param("n_iters", int, quick=40, standard=60, full=100, low=1, high=1000, help="iterations T"),
    Param("n_prompts", int, quick=4, standard=16, full=64, low=1, high=4096, main=False, help="prompts M"),
    Param(
        "n_extra",
        int,
        quick=2,
        low=0,
        high=100,
        main=False,
        help="responses outside the cycle (each loses to every cycle response); K = 3 + n_extra",
    ),
    Param("p01", float, quick=0.9, low=0.0, high=1.0, main=False, help="P(0 ≻ 1) in the cycle"),
    Param("p12", float, quick=0.6, low=0.0, high=1.0, main=False, help="P(1 ≻ 2) in the cycle"),
    Param(
        "p20",
        float,
        quick=0.7,
        low=0.0,
        high=1.0,
        main=False,
        help="P(2 ≻ 0) in the cycle (below 0.5 the game becomes transitive)",
    ),
    Param("extra_lose", float, quick=0.75, low=0.0, high=1.0, main=False, help="P(cycle response ≻ extra response)"),
    Param(
        "ref_extra_mass",
        float,
        quick=0.6,
        low=0.0,
        high=0.99,
        main=False,
        help="π_ref's mass on the extra responses (a weak SFT); the rest is spread evenly over the cycle",
    ),
    Param("n_steps", int, quick=40, low=1, high=10_000, main=False, help="Adam steps per iteration, from θ_t"),
    Param("lr", float, quick=0.1, low=1e-5, high=10.0, log=True, main=False, help="Adam learning rate"),
    Param(
        "n_seeds",
        int,
        quick=3,
        standard=5,
        full=10,
        low=1,
        high=100,
        main=False,
        help="seeds seed, seed+1, …: each permutes the prompts' responses and draws its own pairs",
    ),
]

ARMS = ("INPO", "iterative DPO")
EXACT = "exact OMD"
METRICS = ("exploitability", "worst_win_rate", "win_vs_prev", "tv_to_nash", "mass_off_cycle", "kl_to_ref")


# --- the INPO loss (per example: each returns a tensor shaped like its inputs; take the mean yourself) ---------


def inpo_logits(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    prev_chosen_logps,
    prev_rejected_logps,
    eta,
    tau,
):
    """h_t = Δ_θ − ητ·Δ_ref − (1 − ητ)·Δ_t, with Δ_π = log π(y_w) − log π(y_l) (sequence log-prob SUMS);
    π_t is the frozen previous iterate."""
    ratio = eta * tau
    return (
        (policy_chosen_logps - policy_rejected_logps)
        - ratio * (ref_chosen_logps - ref_rejected_logps)
        - (1.0 - ratio) * (prev_chosen_logps - prev_rejected_logps)
    )


def inpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    prev_chosen_logps,
    prev_rejected_logps,
    eta,
    tau,
):
    """L̂_t = (h_t − η/2)², per pair (y_w ≻ y_l as the oracle said); see :func:`inpo_logits`.
    With ητ = 1 it is IPO with β = 1/η and reference π_ref; with τ = 0, IPO with reference π_t."""
    h = inpo_logits(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        prev_chosen_logps,
        prev_rejected_logps,
        eta,
        tau,
    )
    return (h - eta / 2.0) ** 2


def paper_knobs(ratio: float, eta_code: float) -> tuple[float, float]:
    """The original code's (ratio, eta) → the paper's (η, τ): η = 1/eta_code, τ = ratio·eta_code
    (the code's target 1/(2·eta_code) is η/2 and its ratio is ητ)."""
    return 1.0 / eta_code, ratio * eta_code


# --- the exact game: OMD in closed form, the regularised Nash, win rates ------------------------------------


def omd_step(logp_t, ref_logp, P, eta, tau):
    """log π_{t+1}(y) = (1−ητ)·log π_t(y) + ητ·log π_ref(y) + η·P(y ≻ π_t) − log Z, exactly.
    ``logp_t, ref_logp (..., K)``, ``P (..., K, K)``."""
    win = prefs.win_rate_vs_policy(P, logp_t.exp())
    return torch.log_softmax((1 - eta * tau) * logp_t + eta * tau * ref_logp + eta * win, dim=-1)


def regularised_nash(P, ref_logp, tau, n_iter: int = 5000, tol: float = 1e-9):
    """π*_τ, the fixed point π ∝ π_ref·exp(P(y ≻ π)/τ) of the OMD step, by OMD with a small step
    (η = 0.5/max(τ, 1), so ητ ≤ 1/2) until max |log π_{k+1} − log π_k| < ``tol``.
    Returns (log π*_τ, that last change)."""
    if tau <= 0:
        raise ValueError("the regularised Nash needs τ > 0 (at τ = 0 use prefs.nash_policy)")
    eta = 0.5 / max(tau, 1.0)
    logp = ref_logp.clone()
    for _ in range(n_iter):
        new = omd_step(logp, ref_logp, P, eta, tau)
        change, logp = (new - logp).abs().max().item(), new
        if change < tol:
            break
    return logp, change


def worst_case_win_rate(P, probs):
    """min_y P(π ≻ y) = min_y Σ_i π(i)·P[i, y]; equals 1/2 − e(π) because P(π ≻ y) = 1 − P(y ≻ π). ``(...)``."""
    return (probs.unsqueeze(-1) * P).sum(-2).min(-1).values


# --- the toy problem ---------------------------------------------------------------------------------------------


def make_problem(p, seeds, device="cpu"):
    """Per seed and prompt: a permuted cyclic preference matrix P ``(S, M, K, K)``, π_ref ``(S, M, K)`` with
    ``ref_extra_mass`` on the extras, the permutations ``(S, M, K)`` (response i is canonical perm[i]) and the
    Nash policy of the canonical game. Seed s permutes with ``torch.Generator(s)``."""
    K = 3 + p.n_extra
    base = prefs.cyclic_preference_matrix((p.p01, p.p12, p.p20), p.n_extra, p.extra_lose)
    canon_ref = torch.full((K,), (1 - p.ref_extra_mass) / 3 if p.n_extra else 1 / 3)
    if p.n_extra:
        canon_ref[3:] = p.ref_extra_mass / p.n_extra
    perms = torch.stack(
        [
            torch.stack([torch.randperm(K, generator=gen) for _ in range(p.n_prompts)])
            for gen in (torch.Generator().manual_seed(int(s)) for s in seeds)
        ]
    )
    P = torch.stack([torch.stack([base[q][:, q] for q in row]) for row in perms])
    ref_logp = torch.log(canon_ref[perms])
    return P.to(device), ref_logp.to(device), perms, prefs.nash_policy(base)


def canonical(probs, perms):
    """Un-permute policies: canon[..., perm[i]] = probs[..., i]. ``probs (..., S, M, K)``, ``perms (S, M, K)``."""
    return torch.zeros_like(probs).scatter(-1, perms.to(probs.device).expand_as(probs), probs)


def sample_pairs(probs, P, n_pairs, gen):
    """n pairs y, y' ~ π per (arm, prompt) of one seed, labelled by the oracle (y ≻ y' w.p. P[y, y']).
    ``probs (A, M, K)``, ``P (M, K, K)`` → (chosen, rejected, mask) ``(A, M, n)``; mask drops y = y'."""
    A, M, K = probs.shape
    draws = torch.multinomial(probs.reshape(A * M, K).cpu(), 2 * n_pairs, replacement=True, generator=gen)
    a, b = draws.view(A, M, 2 * n_pairs).to(probs.device).chunk(2, dim=-1)
    a_wins = prefs.sample_preference_labels(P.expand(A, M, K, K), a, b, gen)
    return torch.where(a_wins, a, b), torch.where(a_wins, b, a), a != b


def gather(logp, idx):
    return logp.gather(-1, idx)


def arm_losses(logp, prev_logp, ref_logp, pairs, eta, tau, beta):
    """Per (arm, seed, prompt) mean loss over its kept pairs: arm 0 INPO, arm 1 DPO with reference π_t.
    ``logp, prev_logp (2, S, M, K)``, ``ref_logp (S, M, K)``, pairs ``(2, S, M, n)``."""
    chosen, rejected, mask = pairs
    pol = gather(logp, chosen), gather(logp, rejected)
    prev = gather(prev_logp, chosen), gather(prev_logp, rejected)
    ref = gather(ref_logp.expand_as(logp), chosen), gather(ref_logp.expand_as(logp), rejected)
    inpo = inpo_loss(pol[0][0], pol[1][0], ref[0][0], ref[1][0], prev[0][0], prev[1][0], eta, tau)
    dpo = dpo_loss(pol[0][1], pol[1][1], prev[0][1], prev[1][1], beta)
    return prefs.masked_mean(torch.stack([inpo, dpo]), mask)


def fit_iteration(theta, ref_logp, pairs, p, on_step=None):
    """One iteration for both arms: θ ← θ_t, n_steps of Adam (fresh state) on the summed per-(arm, seed, prompt)
    mean losses (they separate, so each table gets its own Adam update). Returns the new θ and final losses."""
    prev_logp = torch.log_softmax(theta, -1).detach()
    theta = theta.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=p.lr)
    for step in range(p.n_steps):
        losses = arm_losses(torch.log_softmax(theta, -1), prev_logp, ref_logp, pairs, p.eta, p.tau, p.beta)
        if on_step is not None:
            on_step(step, losses.detach())
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
    return theta.detach(), losses.detach()


def policy_metrics(P, logp, prev_logp, ref_logp, canon, nash):
    """Exact per-(arm, seed) numbers, means over prompts; ``logp (A, S, M, K)``, ``canon`` the un-permuted probs."""
    probs = logp.exp()
    mean = lambda t: t.mean(-1)  # noqa: E731  (over prompts)
    return {
        "exploitability": mean(prefs.exploitability(P, probs)),
        "worst_win_rate": mean(worst_case_win_rate(P, probs)),
        "win_vs_prev": mean(prefs.policy_win_rate(P, probs, prev_logp.exp())),
        "tv_to_nash": mean(0.5 * (canon - nash.to(canon)).abs().sum(-1)),
        "mass_off_cycle": mean(canon[..., 3:].sum(-1)),
        "kl_to_ref": mean(prefs.kl_divergence(logp, ref_logp)),
    }


# --- the claim checks (pure functions of per-seed numbers) ------------------------------------------------------


def exploitability_claim(e_inpo, e_dpo, bound: float = 0.06, factor: float = 0.5) -> ClaimCheck:
    """Last iterate, mean over seeds: e(INPO) ≤ ``bound`` and e(INPO) ≤ ``factor``·e(iterative DPO)."""
    inpo, dpo = float(np.mean(e_inpo)), float(np.mean(e_dpo))
    return ClaimCheck(
        claim=f"last-iterate exploitability: INPO ≤ {bound:g} and ≤ {factor:g} × iterative DPO's (mean over seeds)",
        passed=bool(inpo <= bound and inpo <= factor * dpo),
        numbers={
            "e_inpo": inpo,
            "e_dpo": dpo,
            "ratio": inpo / dpo if dpo > 0 else math.inf,
            "e_inpo_per_seed": [round(float(v), 4) for v in e_inpo],
            "e_dpo_per_seed": [round(float(v), 4) for v in e_dpo],
        },
    )


def worst_case_claim(w_inpo, w_dpo, low: float = 0.44, high: float = 0.42) -> ClaimCheck:
    """Worst-case win rate min_y P(π ≻ y), mean over prompts and seeds: INPO ≥ ``low``, iterative DPO ≤ ``high``."""
    inpo, dpo = float(np.mean(w_inpo)), float(np.mean(w_dpo))
    return ClaimCheck(
        claim=f"worst-case win rate min_y P(π ≻ y): INPO ≥ {low:g} and iterative DPO ≤ {high:g}",
        passed=bool(inpo >= low and dpo <= high),
        numbers={"worst_win_inpo": inpo, "worst_win_dpo": dpo},
    )


def tracking_claim(kl_per_seed, bound: float = 0.02) -> ClaimCheck:
    """Mean over iterations, prompts and seeds of KL(π_{t+1}^exact ‖ π_{t+1}^learned) ≤ ``bound``, where
    π_{t+1}^exact is the closed-form OMD step from the learned π_t."""
    kl = float(np.mean(kl_per_seed))
    return ClaimCheck(
        claim=f"the learned INPO iterate tracks the closed-form OMD step: mean KL(exact ‖ learned) ≤ {bound:g}",
        passed=bool(kl <= bound),
        numbers={"kl_mean": kl, "kl_per_seed": [round(float(v), 5) for v in kl_per_seed]},
    )


def head_to_head_claim(win_per_seed) -> ClaimCheck:
    """Reported only (the card: an ε-Nash policy is guaranteed only ≥ 1/2 − ε against any opponent)."""
    win = float(np.mean(win_per_seed))
    return ClaimCheck(
        claim="head to head, last iterates: P(INPO ≻ iterative DPO) > 0.5",
        passed=bool(win > 0.5),
        numbers={"win_inpo_vs_dpo": win, "per_seed": [round(float(v), 4) for v in win_per_seed]},
        asserted=False,
    )


# --- the experiment ------------------------------------------------------------------------------------------


def log_iteration(ctx, t, metrics, seeds, series) -> None:
    for a, name in enumerate(series):
        for s, seed in enumerate(seeds):
            for metric, values in metrics.items():
                if metric == "win_vs_prev" and t == 0:
                    continue
                ctx.history.log(t, name, metric, values[a, s], seed=seed)


def check_losses(ctx, losses, step) -> None:
    """One sync per step; on NaN/inf name the arm that diverged."""
    if math.isfinite(float(losses.sum())):
        return
    for name, arm_loss in zip(ARMS, losses):
        ctx.check(arm_loss.sum(), step, name)


def make_figures(result) -> dict:
    """Exploitability (log y), win rate vs the previous iterate and vs iterative DPO, KL to the exact OMD step,
    seed 0 / prompt 0's mass on each cycle response against the Nash policy, and its path on the simplex."""
    hist, x = result.history, result.extras
    series = list(ARMS) + [EXACT]
    figs = {
        "exploitability": viz.curves(
            hist,
            "exploitability",
            series=series,
            xlabel="iteration t",
            title="Exploitability max_y P(y ≻ π) − 1/2 (0 at Nash), log axis",
        )
    }
    figs["exploitability"].update_yaxes(type="log")
    if x.get("e_reg_nash") is not None:
        figs["exploitability"].add_hline(y=x["e_reg_nash"], line_dash="dot", annotation_text="τ-regularised Nash π*_τ")
    figs["win_vs_prev"] = viz.curves(
        hist,
        "win_vs_prev",
        series=series,
        xlabel="iteration t",
        ylabel="P(π_t ≻ π_{t−1})",
        title="Win rate against the previous iterate",
    )
    figs["win_vs_dpo"] = viz.curves(
        hist,
        "win_vs_dpo",
        series=["INPO", EXACT],
        xlabel="iteration t",
        ylabel="P(π ≻ π_DPO,t)",
        title="Win rate against iterative DPO's iterate",
    )
    for key in ("win_vs_prev", "win_vs_dpo"):
        figs[key].add_hline(y=0.5, line_dash="dot")
    figs["omd_kl"] = viz.curves(
        hist,
        "omd_kl",
        series=["INPO"],
        xlabel="iteration t",
        ylabel="KL(π_exact ‖ π_learned)",
        title="How far the learned iterate is from the closed-form OMD step, log axis",
    )
    figs["omd_kl"].update_yaxes(type="log")
    figs["tv_to_nash"] = viz.curves(
        hist,
        "tv_to_nash",
        series=series,
        xlabel="iteration t",
        ylabel="½‖π − π_Nash‖₁",
        title="Total-variation distance to the Nash policy",
    )
    figs["cycle_mass"] = cycle_mass_figure(x["seed0_canonical"], x["nash"])
    figs["simplex"] = simplex_figure(x["seed0_canonical"], x["nash"])
    return figs


def cycle_mass_figure(paths, nash):
    """π_t(y) of seed 0, prompt 0 on the canonical cycle responses 0–2 (solid INPO, dashed DPO), Nash dotted."""
    t = list(range(len(paths["INPO"])))
    ys = {f"{arm} · y{k}": [row[k] for row in paths[arm]] for arm in ARMS for k in range(3)}
    fig = viz.lines(
        t,
        ys,
        title="Seed 0, prompt 0: mass on each cycle response (dotted: Nash)",
        xlabel="iteration t",
        ylabel="π_t(y)",
    )
    colours = viz.PALETTE
    for trace in fig.data:
        arm, resp = trace.name.split(" · ")
        trace.line.update(color=colours[int(resp[1])], dash="dash" if arm != "INPO" else None)
    for k in range(3):
        fig.add_hline(y=nash[k], line_dash="dot", line_color=colours[k], annotation_text=f"Nash y{k}")
    return fig


def simplex_figure(paths, nash):
    """The path of (π(0), π(1), π(2)) renormalised on the cycle, seed 0 / prompt 0, on a ternary plot."""
    import plotly.graph_objects as go

    fig = go.Figure()
    colours = viz.color_map(list(ARMS) + [EXACT, "Nash"])
    for name in list(ARMS) + [EXACT]:
        rows = np.asarray(paths[name])[:, :3]
        rows = rows / rows.sum(1, keepdims=True)
        fig.add_trace(
            go.Scatterternary(
                a=rows[:, 0],
                b=rows[:, 1],
                c=rows[:, 2],
                mode="lines+markers",
                name=name,
                marker={"size": 4},
                line={"color": colours[name]},
            )
        )
    fig.add_trace(
        go.Scatterternary(
            a=[nash[0]],
            b=[nash[1]],
            c=[nash[2]],
            mode="markers",
            name="Nash",
            marker={"size": 14, "symbol": "star", "color": "black"},
        )
    )
    fig.update_layout(
        title="Seed 0, prompt 0: the policy on the cycle simplex (mass renormalised to y0–y2)",
        ternary={"aaxis": {"title": "y0"}, "baxis": {"title": "y1"}, "caxis": {"title": "y2"}},
        template="plotly_white",
        height=460,
    )
    return fig


def exact_omd_path(P, ref_logp, eta, tau, n_iters):
    """The closed-form OMD trajectory from π_0 = π_ref: ``(T+1, S, M, K)`` log-probs."""
    path = [ref_logp]
    for _ in range(n_iters):
        path.append(omd_step(path[-1], ref_logp, P, eta, tau))
    return torch.stack(path)


def final_metrics(last, e_reg, kl_track, win_h2h) -> dict[str, float]:
    """Means over seeds of the last iterate's numbers."""
    out = {}
    for key, idx in (("inpo", 0), ("dpo", 1), ("exact", 2)):
        for metric in ("exploitability", "worst_win_rate", "tv_to_nash", "mass_off_cycle", "kl_to_ref"):
            out[f"{metric}_{key}"] = float(last[metric][idx].mean())
    out["omd_kl_inpo"] = float(np.mean(kl_track))
    out["win_inpo_vs_dpo"] = float(np.mean(win_h2h))
    if e_reg is not None:
        out["exploitability_reg_nash"] = e_reg
    return out


@method_run(PARAMS, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext) -> Outcome:
    p = ctx.p
    if p.eta * p.tau > 1 + 1e-12:
        raise ValueError(f"eta·tau = {p.eta * p.tau:g} > 1: the OMD step needs ητ ≤ 1 (the code's ratio)")
    seeds = [ctx.seed + k for k in range(p.n_seeds)]
    P, ref_logp, perms, nash = make_problem(p, seeds, ctx.device)
    gens = [torch.Generator().manual_seed(10**6 + int(s)) for s in seeds]
    series = list(ARMS) + [EXACT]
    exact = exact_omd_path(P, ref_logp, p.eta, p.tau, p.n_iters)
    theta = ref_logp.unsqueeze(0).repeat(2, 1, 1, 1)  # θ_0 = log π_ref: both arms start at the SFT policy
    paths = {name: [] for name in series}
    kl_track, h2h = [], None
    bar = ctx.bar(p.n_iters * p.n_steps, f"INPO + iterative DPO, {len(seeds)} seeds")
    prev = torch.log_softmax(theta, -1)
    for t in range(p.n_iters + 1):
        logp = torch.cat([torch.log_softmax(theta, -1), exact[t][None]])
        prev_all = torch.cat([prev, exact[max(t - 1, 0)][None]])
        canon = canonical(logp.exp(), perms)
        with torch.no_grad():
            m = {k: v.cpu().numpy() for k, v in policy_metrics(P, logp, prev_all, ref_logp, canon, nash).items()}
            win = prefs.policy_win_rate(P, logp[[0, 2]].exp(), logp[1].exp()).mean(-1).cpu().numpy()
        log_iteration(ctx, t, m, seeds, series)
        for a, name in ((0, "INPO"), (1, EXACT)):
            for s, seed in enumerate(seeds):
                ctx.history.log(t, name, "win_vs_dpo", win[a, s], seed=seed)
        for a, name in enumerate(series):
            paths[name].append(canon[a, 0, 0].cpu().tolist())
        last, h2h = m, win[0]
        if t == p.n_iters:
            break
        step_exact = omd_step(logp[0], ref_logp, P, p.eta, p.tau)  # from the LEARNED π_t
        pairs = [sample_pairs(logp[:2, s].exp(), P[s], p.n_pairs, gens[s]) for s in range(len(seeds))]
        pairs = tuple(torch.stack([q[i] for q in pairs], dim=1) for i in range(3))  # (2, S, M, n)

        def on_step(step, losses, t=t):
            check_losses(ctx, losses, t * p.n_steps + step)
            bar.update(1)

        prev = logp[:2]
        theta, losses = fit_iteration(theta, ref_logp, pairs, p, on_step)
        new = torch.log_softmax(theta, -1)
        kl = prefs.kl_divergence(step_exact, new[0]).mean(-1).cpu().numpy()
        kl_track.append(kl)
        for s, seed in enumerate(seeds):
            ctx.history.log(t + 1, "INPO", "omd_kl", kl[s], seed=seed)
            for a, name in enumerate(ARMS):
                ctx.history.log(t + 1, name, "loss", losses[a, s].mean(), seed=seed)
    bar.close()
    kl_seed = np.mean(kl_track, axis=0) if kl_track else np.zeros(len(seeds))
    e_reg = None
    if p.tau > 0:
        reg_logp, residual = regularised_nash(P, ref_logp, p.tau)
        e_reg = float(prefs.exploitability(P, reg_logp.exp()).mean())
    claims = [
        exploitability_claim(last["exploitability"][0], last["exploitability"][1]),
        worst_case_claim(last["worst_win_rate"][0], last["worst_win_rate"][1]),
        tracking_claim(kl_seed),
        head_to_head_claim(h2h),
    ]
    extras = {
        "seeds": seeds,
        "nash": nash.tolist(),
        "seed0_canonical": paths,
        "e_reg_nash": e_reg,
        "permutations": perms.tolist(),
        "P_canonical": prefs.cyclic_preference_matrix((p.p01, p.p12, p.p20), p.n_extra, p.extra_lose).tolist(),
        "final": {m: {n: last[m][a].tolist() for a, n in enumerate(series)} for m in METRICS},
    }
    return Outcome(metrics=final_metrics(last, e_reg, kl_seed, h2h), claims=claims, extras=extras)

"""INPO's experiment: the typed knobs, the tabular intransitive game, INPO vs iterative DPO vs exact OMD, the
claims, run(). The paper's loss, the OMD step and the iteration are in :mod:`.method`.

Every seed permutes each prompt's responses and draws its own pairs and labels; everything measured
(exploitability, win rates, KL) is exact on the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, check_arms, knob, method_run, params_of
from labkit.data import preferences as prefs

from .figures import make_figures
from .method import inpo_iteration, omd_step, regularised_nash, worst_case_win_rate


@dataclass(frozen=True)
class Knobs:
    eta: float = knob(
        2.0,
        low=1e-3,
        high=100.0,
        log=True,
        help="OMD step η (the target of the squared loss is η/2; the original code's `eta` is 1/η)",
    )
    tau: float = knob(
        0.05, low=0.0, high=10.0, help="KL regularisation τ towards π_ref (ητ ≤ 1; the code's `ratio` is ητ)"
    )
    beta: float = knob(0.1, low=1e-3, high=10.0, log=True, help="iterative DPO's temperature β")
    n_pairs: int = knob(
        512,
        standard=1024,
        full=4096,
        low=8,
        high=1_000_000,
        help="oracle-labelled pairs per prompt per iteration, drawn from π_t (ties y = y' dropped)",
    )
    n_iters: int = knob(40, standard=60, full=100, low=1, high=1000, help="iterations T")
    n_prompts: int = knob(4, standard=16, full=64, low=1, high=4096, main=False, help="prompts M")
    n_extra: int = knob(
        2,
        low=0,
        high=100,
        main=False,
        help="responses outside the cycle (each loses to every cycle response); K = 3 + n_extra",
    )
    p01: float = knob(0.9, low=0.0, high=1.0, main=False, help="P(0 ≻ 1) in the cycle")
    p12: float = knob(0.6, low=0.0, high=1.0, main=False, help="P(1 ≻ 2) in the cycle")
    p20: float = knob(
        0.7, low=0.0, high=1.0, main=False, help="P(2 ≻ 0) in the cycle (below 0.5 the game becomes transitive)"
    )
    extra_lose: float = knob(0.75, low=0.0, high=1.0, main=False, help="P(cycle response ≻ extra response)")
    ref_extra_mass: float = knob(
        0.6,
        low=0.0,
        high=0.99,
        main=False,
        help="π_ref's mass on the extra responses (a weak SFT); the rest is spread evenly over the cycle",
    )
    n_steps: int = knob(40, low=1, high=10_000, main=False, help="Adam steps per iteration, from θ_t")
    lr: float = knob(0.1, low=1e-5, high=10.0, log=True, main=False, help="Adam learning rate")
    n_seeds: int = knob(
        10,
        standard=10,
        full=10,
        low=1,
        high=100,
        main=False,
        help="seeds seed, seed+1, …: each permutes the prompts' responses and draws its own pairs",
    )

    def __post_init__(self):
        # checked by the one validator (CLI, notebook, widgets, sweep, run) before anything runs
        if self.eta * self.tau > 1 + 1e-12:
            raise ValueError(
                f"eta·tau = {self.eta * self.tau:g} > 1 is not allowed: the OMD step mixes π_t and π_ref with "
                "weights 1 − ητ and ητ, so ητ must be ≤ 1 (lower eta or tau)"
            )


PARAMS = params_of(Knobs)
MAIN_METRIC = "exploitability"

INPO, DPO, EXACT = Arm("inpo", "INPO"), Arm("dpo", "iterative DPO"), Arm("exact", "exact OMD")
#: the two learned arms, in the order of θ's first dim; the exact OMD path is computed beside them
ARMS = (INPO, DPO)
METRICS = ("exploitability", "worst_win_rate", "win_vs_prev", "tv_to_nash", "mass_off_cycle", "kl_to_ref")
#: the pair-sampling generator of seed s is seeded with s + this, apart from the permutation generator (seed s)
PAIR_SEED_OFFSET = 10**6
#: the number of responses in the rock-paper-scissors cycle (responses 0, 1, 2 in the canonical labelling)
CYCLE = 3
#: the card's teaching-scale tolerances (not numbers from the paper; fixed in the card before any run)
NEAR_NASH_BOUND = 0.06
TRACKING_BOUND = 0.02
#: decimals of the claims' printed numbers, from the spread measured across CPU kernels and thread counts at
#: quick (benchmarks/spread/inpo.json): exploitability means and interval edges move by up to 4e-4 (a few
#: sampled pairs flip, so the INPO trajectories differ a little), the tracking KL by 2e-5; each claim prints a
#: last digit at least 20× its largest spread
CLAIM_DECIMALS = 2
TRACKING_DECIMALS = 3


# --- typed records -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmOutcome:
    """One arm's last-iterate numbers, one value per seed (means over prompts), and the first seed's first
    prompt's path over iterations in the canonical labelling (for the figures)."""

    arm: Arm
    exploitability: tuple[float, ...]
    worst_win_rate: tuple[float, ...]
    tv_to_nash: tuple[float, ...]
    mass_off_cycle: tuple[float, ...]
    kl_to_ref: tuple[float, ...]
    path_seed0: tuple[tuple[float, ...], ...]


# --- the claims (pure functions of per-seed numbers) ----------------------------------------------------------


def exploitability_claim(e_inpo, e_dpo, decimals: int = CLAIM_DECIMALS) -> ClaimCheck:
    """Headline (the card's toy form of "INPO beats iterative DPO"): with intransitive preferences INPO's last
    iterate is less exploitable than iterative DPO's. Margin 0 on the per-seed e(INPO) − e(iterative DPO)."""
    e_inpo, e_dpo = np.asarray(e_inpo, float), np.asarray(e_dpo, float)
    diff = e_inpo - e_dpo
    return ClaimCheck(
        claim="INPO's last iterate is less exploitable than iterative DPO's (intransitive preferences)",
        quantity="exploitability max_y P(y ≻ π) − 1/2, last iterate, INPO − iterative DPO, per seed",
        values=diff,
        margin=0.0,
        higher_is_better=False,
        headline=True,
        numbers={"e(INPO)": float(e_inpo.mean()), "e(iterative DPO)": float(e_dpo.mean())},
        detail="" if np.isfinite(diff).all() else "an exploitability is not finite: the verdict is inconclusive",
        decimals=decimals,
    )


def near_nash_claim(e_inpo, bound: float = NEAR_NASH_BOUND, decimals: int = CLAIM_DECIMALS) -> ClaimCheck:
    """Supporting: INPO's last iterate converges close to the Nash policy (the paper: last-iterate convergence to
    the τ-regularised Nash). ``bound`` is the card's teaching-scale tolerance, not a number from the paper."""
    e_inpo = np.asarray(e_inpo, float)
    return ClaimCheck(
        claim=f"INPO's last iterate is close to Nash: exploitability ≤ {bound:g} (the card's tolerance)",
        quantity="exploitability of INPO's last iterate, per seed",
        values=e_inpo,
        margin=bound,
        higher_is_better=False,
        detail="" if np.isfinite(e_inpo).all() else "an exploitability is not finite: the verdict is inconclusive",
        decimals=decimals,
    )


def tracking_claim(kl_per_seed, bound: float = TRACKING_BOUND, decimals: int = TRACKING_DECIMALS) -> ClaimCheck:
    """Supporting: the learned iterate tracks the closed-form OMD step from the learned π_t (the paper: the
    loss's population minimiser IS that step; with samples only approximately, hence the card's ``bound``)."""
    kl = np.asarray(kl_per_seed, float)
    return ClaimCheck(
        claim=f"the learned INPO iterate tracks the closed-form OMD step: KL ≤ {bound:g} (the card's tolerance)",
        quantity="KL(π_{t+1}^exact ‖ π_{t+1}^learned), mean over iterations and prompts, per seed",
        values=kl,
        margin=bound,
        higher_is_better=False,
        detail="" if np.isfinite(kl).all() else "a KL is not finite: the verdict is inconclusive",
        decimals=decimals,
    )


# --- the toy problem -------------------------------------------------------------------------------------------


def make_problem(
    seeds,
    *,
    n_prompts: int,
    n_extra: int,
    cycle: tuple[float, float, float],
    extra_lose: float,
    ref_extra_mass: float,
    device="cpu",
):
    """Per seed and prompt: a permuted cyclic preference matrix P ``(S, M, K, K)``, π_ref ``(S, M, K)`` with
    ``ref_extra_mass`` on the extras, the permutations ``(S, M, K)`` (response i is canonical perm[i]) and the
    Nash policy of the canonical game. Seed s permutes with ``torch.Generator(s)``."""
    K = CYCLE + n_extra
    base = prefs.cyclic_preference_matrix(cycle, n_extra, extra_lose)
    canon_ref = torch.full((K,), (1 - ref_extra_mass) / CYCLE if n_extra else 1 / CYCLE)
    if n_extra:
        canon_ref[CYCLE:] = ref_extra_mass / n_extra
    perms = torch.stack(
        [
            torch.stack([torch.randperm(K, generator=gen) for _ in range(n_prompts)])
            for gen in (torch.Generator().manual_seed(int(s)) for s in seeds)
        ]
    )
    P = torch.stack([torch.stack([base[q][:, q] for q in row]) for row in perms])
    ref_logp = torch.log(canon_ref[perms])
    return P.to(device), ref_logp.to(device), perms, prefs.nash_policy(base)


def canonical(probs, perms):
    """Un-permute policies: canon[..., perm[i]] = probs[..., i]. ``probs (..., S, M, K)``, ``perms (S, M, K)``."""
    return torch.zeros_like(probs).scatter(-1, perms.to(probs.device).expand_as(probs), probs)


def policy_metrics(P, logp, prev_logp, ref_logp, canon, nash) -> dict:
    """Exact per-(arm, seed) numbers, means over prompts; ``logp (A, S, M, K)``, ``canon`` the un-permuted probs."""
    probs = logp.exp()
    mean = lambda t: t.mean(-1)  # noqa: E731  (over prompts)
    return {
        "exploitability": mean(prefs.exploitability(P, probs)),
        "worst_win_rate": mean(worst_case_win_rate(P, probs)),
        "win_vs_prev": mean(prefs.policy_win_rate(P, probs, prev_logp.exp())),
        "tv_to_nash": mean(0.5 * (canon - nash.to(canon)).abs().sum(-1)),
        "mass_off_cycle": mean(canon[..., CYCLE:].sum(-1)),
        "kl_to_ref": mean(prefs.kl_divergence(logp, ref_logp)),
    }


def exact_omd_path(P, ref_logp, eta, tau, n_iters):
    """The closed-form OMD trajectory from π_0 = π_ref: ``(T+1, S, M, K)`` log-probs."""
    path = [ref_logp]
    for _ in range(n_iters):
        path.append(omd_step(path[-1], ref_logp, P, eta, tau))
    return torch.stack(path)


# --- the experiment -------------------------------------------------------------------------------------------


def log_iteration(ctx, t, metrics, seeds, arms) -> None:
    for a, arm in enumerate(arms):
        for s, seed in enumerate(seeds):
            for metric, values in metrics.items():
                if metric == "win_vs_prev" and t == 0:
                    continue
                ctx.history.log(t, arm.label, metric, values[a, s], seed=seed)


def final_metrics(outcomes: list[ArmOutcome], e_reg, kl_track, win_h2h) -> dict[str, float]:
    """Means over seeds of the last iterate's numbers."""
    out = {}
    for o in outcomes:
        for metric in ("exploitability", "worst_win_rate", "tv_to_nash", "mass_off_cycle", "kl_to_ref"):
            out[f"{metric}_{o.arm.key}"] = float(np.mean(getattr(o, metric)))
    out["omd_kl_inpo"] = float(np.mean(kl_track))
    out["win_inpo_vs_dpo"] = float(np.mean(win_h2h))
    if e_reg is not None:
        out["exploitability_reg_nash"] = e_reg
    return out


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p  # Knobs.__post_init__ has refused eta·tau > 1 before any work
    seeds = ctx.seeds(p.n_seeds)
    P, ref_logp, perms, nash = make_problem(
        seeds,
        n_prompts=p.n_prompts,
        n_extra=p.n_extra,
        cycle=(p.p01, p.p12, p.p20),
        extra_lose=p.extra_lose,
        ref_extra_mass=p.ref_extra_mass,
        device=ctx.device,
    )
    gens = [torch.Generator().manual_seed(PAIR_SEED_OFFSET + int(s)) for s in seeds]
    shown = (*ARMS, EXACT)  # θ's two arms, then the exact OMD path
    exact = exact_omd_path(P, ref_logp, p.eta, p.tau, p.n_iters)
    theta = ref_logp.unsqueeze(0).repeat(len(ARMS), 1, 1, 1)  # θ_0 = log π_ref: both arms start at the SFT policy
    paths = {arm.key: [] for arm in shown}
    kl_track, h2h = [], None
    bar = ctx.bar(p.n_iters * p.n_steps, f"INPO + iterative DPO, {len(seeds)} seeds")
    prev = torch.log_softmax(theta, -1)
    for t in range(p.n_iters + 1):
        logp = torch.cat([torch.log_softmax(theta, -1), exact[t][None]])
        prev_all = torch.cat([prev, exact[max(t - 1, 0)][None]])
        canon = canonical(logp.exp(), perms)
        with torch.no_grad():
            m = {k: v.cpu().numpy() for k, v in policy_metrics(P, logp, prev_all, ref_logp, canon, nash).items()}
            # P(π ≻ π_DPO,t) for INPO and the exact path, mean over prompts                      (2, S)
            win = prefs.policy_win_rate(P, logp[[0, 2]].exp(), logp[1].exp()).mean(-1).cpu().numpy()
        log_iteration(ctx, t, m, seeds, shown)
        for a, arm in ((0, INPO), (1, EXACT)):
            for s, seed in enumerate(seeds):
                ctx.history.log(t, arm.label, "win_vs_dpo", win[a, s], seed=seed)
        for a, arm in enumerate(shown):
            paths[arm.key].append(tuple(canon[a, 0, 0].cpu().tolist()))
        last, h2h = m, win[0]
        if t == p.n_iters:
            break
        step_exact = omd_step(logp[0], ref_logp, P, p.eta, p.tau)  # from the LEARNED π_t

        def on_step(step, losses, theta, t=t):
            check_arms(losses, t * p.n_steps + step, [arm.label for arm in ARMS], weights=[theta])
            bar.update(1)

        prev = logp[: len(ARMS)]
        theta, losses = inpo_iteration(
            theta,
            ref_logp,
            P,
            gens,
            n_pairs=p.n_pairs,
            eta=p.eta,
            tau=p.tau,
            beta=p.beta,
            n_steps=p.n_steps,
            lr=p.lr,
            on_step=on_step,
        )
        new = torch.log_softmax(theta, -1)
        kl = prefs.kl_divergence(step_exact, new[0]).mean(-1).cpu().numpy()
        kl_track.append(kl)
        for s, seed in enumerate(seeds):
            ctx.history.log(t + 1, INPO.label, "omd_kl", kl[s], seed=seed)
            for a, arm in enumerate(ARMS):
                ctx.history.log(t + 1, arm.label, "loss", losses[a, s].mean(), seed=seed)
    bar.close()
    kl_seed = np.mean(kl_track, axis=0) if kl_track else np.zeros(len(seeds))
    e_reg = None
    if p.tau > 0:
        reg_logp, _ = regularised_nash(P, ref_logp, p.tau)
        e_reg = float(prefs.exploitability(P, reg_logp.exp()).mean())
    outcomes = [
        ArmOutcome(
            arm=arm,
            exploitability=tuple(last["exploitability"][a].tolist()),
            worst_win_rate=tuple(last["worst_win_rate"][a].tolist()),
            tv_to_nash=tuple(last["tv_to_nash"][a].tolist()),
            mass_off_cycle=tuple(last["mass_off_cycle"][a].tolist()),
            kl_to_ref=tuple(last["kl_to_ref"][a].tolist()),
            path_seed0=tuple(paths[arm.key]),
        )
        for a, arm in enumerate(shown)
    ]
    inpo, dpo = outcomes[0], outcomes[1]
    claims = [
        exploitability_claim(inpo.exploitability, dpo.exploitability),
        near_nash_claim(inpo.exploitability),
        tracking_claim(kl_seed),
    ]
    extras = {
        "seeds": list(seeds),
        "arms": outcomes,
        "nash": nash.tolist(),
        "e_reg_nash": e_reg,
        "win_inpo_vs_dpo": tuple(float(v) for v in h2h),
        "permutations": perms.tolist(),
        "P_canonical": prefs.cyclic_preference_matrix((p.p01, p.p12, p.p20), p.n_extra, p.extra_lose).tolist(),
    }
    return Outcome(metrics=final_metrics(outcomes, e_reg, kl_seed, h2h), claims=claims, extras=extras)

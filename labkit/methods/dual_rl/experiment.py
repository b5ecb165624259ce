"""Dual RL's experiment: the typed knobs, the gridworld data, ReCOIL against BC and IQ-Learn (part A), f-DVL against
XQL and IQL with the stress test (part B), the claims, run().

The world is the known tabular MDP of :mod:`labkit.substrates.gridworld` (the card's 8×8 map, slip 0.3, horizon 60,
γ 0.95), so every return is exact (no evaluation episodes) and normalised as D4RL does (0 = uniform policy,
1 = the value-iteration expert). Each seed draws its own data (and, on the 12×12 grid, its own map).

- Part A (imitation): D_E = ``n_expert`` expert episodes, D_S = ``n_replay`` uniformly random episodes (which never
  reach the goal). ReCOIL with β and β_high, offline IQ-Learn (the same dual with β = 1: expert data only) and BC
  (counts on D_E, uniform at unseen states). Full-batch Adam (lr 0.1); ReCOIL's policy is greedy in Q over the
  actions of D_E ∪ D_S at each state, IQ-Learn's over those of D_E.
- Part B (offline RL): ``n_behaviour`` episodes of the ε-noisy expert, the goal reward × ``reward_scale``. IQL,
  XQL (α and α_high), χ²-DVL and TV-DVL (λ), policies by AWR (its exact tabular maximiser). Every arm also runs the
  STRESS TEST: the same training from Q tables initialised N(0, stress_std²), recording the largest value loss.

Two departures from the card, both measured: in part B, full-batch steps on the empirical distribution (the data's
distinct transitions, weighted) instead of minibatches of 256, and, in both parts, Adam's learning rate annealed to 0
(cosine) instead of held at 0.1. With a constant 0.1 (minibatch or full batch) Adam keeps oscillating around the
fixed point and the implicit maximisers rectify the oscillation upwards: V(s0) drifts above the data's in-sample
maximum as training goes on (≈ 5–11 after 8,000 steps where the empirical in-support optimum is 3–4, V* = 2.9) and
returns collapse. Annealed, lr 0.1 and 0.03 end at the same tables (V(s0) ≈ 3.0), and the runs reproduce across CPU
kernels. The value loss is then the mean over all the data (the "batch" is the whole data set). The quick preset
cuts the card's 3,000 steps to 1,000 (A) and 1,500 (B), where the returns no longer move: the same to two decimals
as after 1,500 and 2,000 steps (ReCOIL's also as after 10,000); standard keeps 3,000.

No choice is made on the evaluation: β, α and λ are the card's values, fixed before the run; the second β and α are
shown next to them, never picked from the results; the step counts and the learning-rate schedule were set by
convergence (the tables and returns stop moving), not by which arm looks better. The claims' margins are the card's,
fixed in code below.

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded. One exception, by
design: XQL's Gumbel value loss e^{x/α} overflowing float32 is the instability part B measures, so inside the
training loop (:func:`.method.train_dvl`) an XQL arm whose VALUE loss becomes inf/NaN is stopped at that step and
frozen at its last finite tables, and its overflow step and largest loss (inf) are recorded as that arm's result
(its return is the frozen policy's). Every other non-finite loss (ReCOIL, IQ-Learn, IQL, χ²-DVL, TV-DVL, and any
arm's Q loss) and any weight beyond 1e6 still stops the whole run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, check_arms, knob, method_run, params_of
from labkit.substrates import gridworld as gw

from .figures import make_figures
from .method import (
    Transitions,
    ValueLoss,
    awr_policy,
    awr_weights,
    greedy_in_support,
    q_at,
    soft_value,
    train_dvl,
    train_recoil,
)


@dataclass(frozen=True)
class Knobs:
    beta: float = knob(0.2, low=0.01, high=0.99, help="ReCOIL mixture weight β (β = 1 would be IQ-Learn)")
    n_replay: int = knob(300, low=1, high=100_000, help="uniformly random episodes in D_S (part A)")
    lam: float = knob(0.8, low=0.5, high=0.99, help="f-DVL temperature λ of the χ² and TV value losses")
    alpha: float = knob(1.0, low=0.05, high=100.0, log=True, help="XQL Gumbel temperature α (the stress claim's arm)")
    stress_std: float = knob(30.0, low=0.0, high=1000.0, help="stress test: Q tables initialised N(0, std²)")
    n_seeds: int = knob(3, standard=10, full=30, low=1, high=1000, main=False, help="independent problems")
    beta_high: float = knob(0.5, low=0.01, high=0.99, main=False, help="β of the second ReCOIL arm")
    alpha_high: float = knob(3.0, low=0.05, high=100.0, log=True, main=False, help="α of the second XQL arm")
    n_expert: int = knob(1, low=1, high=1000, main=False, help="expert episodes in D_E (part A)")
    n_behaviour: int = knob(300, low=1, high=100_000, main=False, help="ε-noisy expert episodes (part B)")
    noise: float = knob(0.5, low=0.0, high=1.0, main=False, help="ε of part B's behaviour policy")
    reward_scale: float = knob(10.0, low=0.01, high=1000.0, log=True, main=False, help="goal reward × (part B)")
    tau: float = knob(0.05, low=1e-3, high=10.0, log=True, main=False, help="ReCOIL's soft-V temperature τ")
    expectile: float = knob(0.8, low=0.5, high=0.99, main=False, help="IQL expectile τ")
    awr_beta: float = knob(3.0, low=0.0, high=100.0, main=False, help="AWR inverse temperature (weights ≤ 100)")
    recoil_steps: int = knob(
        1000, standard=3000, low=1, high=1_000_000, main=False, help="full-batch Adam steps (part A)"
    )
    dvl_steps: int = knob(
        1500, standard=3000, full=10_000, low=1, high=1_000_000, main=False, help="full-batch Adam steps (part B)"
    )
    recoil_lr: float = knob(
        0.1, low=1e-4, high=1.0, log=True, main=False, help="Adam learning rate (part A), annealed to 0"
    )
    dvl_lr: float = knob(
        0.1, low=1e-4, high=1.0, log=True, main=False, help="Adam learning rate (part B), annealed to 0"
    )
    log_every: int = knob(250, low=1, high=1_000_000, main=False, help="log returns and losses every this many steps")
    grid: str = knob(
        "8x8",
        standard="12x12",
        choices=("8x8", "12x12"),
        main=False,
        help="8x8: the card's map; 12x12: a random map with 18 holes per seed (the card's standard preset)",
    )

    def __post_init__(self):
        if self.beta == self.beta_high:
            raise ValueError(f"beta_high={self.beta_high} equals beta: the second ReCOIL arm must use another β")
        if self.alpha == self.alpha_high:
            raise ValueError(f"alpha_high={self.alpha_high} equals alpha: the second XQL arm must use another α")


PARAMS = params_of(Knobs)
MAIN_METRIC = "normalised_return"

#: the claims' margins (the card's claim check, fixed before any run)
RECOIL_OVER_BC = 0.20  # ReCOIL(β) ≥ BC + 0.20
RECOIL_OVER_IQ = 0.15  # ReCOIL(β) ≥ IQ-Learn(β = 1) + 0.15
DVL_FLOOR = 0.90  # χ²-DVL and TV-DVL each ≥ 0.90 normalised return
XQL_BLOWUP_LOG10 = 10.0  # stress test: XQL's largest value loss ≥ 1e10 (or it overflowed)
DVL_BOUND_LOG10 = 4.0  # stress test: χ²/TV's largest value loss < 1e4
#: an overflowed loss is at least float32's largest number: its log10 stands in for inf in the claims and plots
FLOAT32_MAX_LOG10 = math.log10(float(np.finfo(np.float32).max))
#: decimals of the printed claim numbers (normalised returns; log10 of losses)
RETURN_DECIMALS = 2
LOG10_DECIMALS = 1


# --- arms and typed records --------------------------------------------------------------------------------


def recoil_arms(beta: float, beta_high: float) -> tuple[Arm, Arm, Arm, Arm]:
    """Part A: BC, IQ-Learn (β = 1), ReCOIL(β), ReCOIL(β_high)."""
    return (
        Arm("bc", "BC"),
        Arm("iq_learn", "IQ-Learn (β=1)"),
        Arm("recoil", f"ReCOIL β={beta:g}"),
        Arm("recoil_high", f"ReCOIL β={beta_high:g}"),
    )


def dvl_arms(p: Knobs) -> list[tuple[Arm, ValueLoss]]:
    """Part B: each arm with its value loss (IQL, XQL α, XQL α_high, χ²-DVL, TV-DVL)."""
    return [
        (Arm("iql", f"IQL τ={p.expectile:g}"), ValueLoss("expectile", p.expectile)),
        (Arm("xql", f"XQL α={p.alpha:g}"), ValueLoss("gumbel", p.alpha)),
        (Arm("xql_high", f"XQL α={p.alpha_high:g}"), ValueLoss("gumbel", p.alpha_high)),
        (Arm("chi2", f"χ²-DVL λ={p.lam:g}"), ValueLoss("chi2", p.lam)),
        (Arm("tv", f"TV-DVL λ={p.lam:g}"), ValueLoss("tv", p.lam)),
    ]


def stress_arm(arm: Arm) -> Arm:
    return Arm(f"stress_{arm.key}", f"{arm.label} · stress")


@dataclass(frozen=True)
class ArmResult:
    """One arm's final numbers, one value per seed (seed order of the run). ``part``: "recoil" (A), "dvl" (B) or
    "stress" (B from noisy Q tables). ``max_value_loss``: the largest value loss seen (inf = it overflowed;
    empty in part A); ``overflow_step``: where it overflowed (−1 = never). ``v_first_seed``: the learned V over the
    grid's cells for the first seed (empty for BC)."""

    arm: Arm
    part: str
    returns: tuple[float, ...]
    max_value_loss: tuple[float, ...] = ()
    overflow_step: tuple[int, ...] = ()
    v_first_seed: tuple[float, ...] = ()

    @property
    def overflowed(self) -> int:
        """Seeds whose value loss overflowed."""
        return sum(step >= 0 for step in self.overflow_step)


@dataclass(frozen=True)
class World:
    """The first seed's map and data, for the figures: layout, expert occupancy and D_S coverage per cell."""

    layout: tuple[str, ...]
    expert_visits: tuple[float, ...]
    replay_visits: tuple[float, ...]
    behaviour_returns: tuple[float, ...]  # part B's behaviour policy, normalised, per seed


# --- the claims (pure functions of per-seed numbers) -----------------------------------------------------


def log10_loss(values) -> np.ndarray:
    """log10 of the largest value losses; an overflow (inf) counts as float32's largest number (a lower bound)."""
    v = np.asarray(values, dtype=float)
    out = np.log10(np.clip(np.where(np.isposinf(v), np.finfo(np.float32).max, v), 1e-30, None))
    return np.where(np.isnan(v), np.nan, out)


def recoil_claim(recoil, bc, iq_learn, beta: float, decimals: int = RETURN_DECIMALS) -> ClaimCheck:
    """Headline (the paper: ReCOIL imitates from a few expert trajectories plus arbitrary sub-optimal data where
    coverage-assuming methods fail). Card margins: ReCOIL ≥ BC + 0.20 AND ≥ IQ-Learn + 0.15, so the per-seed value
    is the smaller of the two excesses, min(R − BC − 0.20, R − IQ − 0.15), against 0."""
    recoil, bc, iq = (np.asarray(x, float) for x in (recoil, bc, iq_learn))
    excess = np.minimum(recoil - bc - RECOIL_OVER_BC, recoil - iq - RECOIL_OVER_IQ)
    return ClaimCheck(
        claim=f"ReCOIL (β={beta:g}) imitates from 1 expert episode + random data better than BC and IQ-Learn",
        quantity=(
            f"min(ReCOIL − BC − {RECOIL_OVER_BC:g}, ReCOIL − IQ-Learn − {RECOIL_OVER_IQ:g}), "
            "normalised return, per seed"
        ),
        values=excess,
        margin=0.0,
        headline=True,
        numbers={"ReCOIL": float(recoil.mean()), "BC": float(bc.mean()), "IQ-Learn": float(iq.mean())},
        detail=_nonfinite(excess),
        decimals=decimals,
    )


def dvl_return_claim(chi2, tv, lam: float, decimals: int = RETURN_DECIMALS) -> ClaimCheck:
    """The paper: f-DVL matches XQL/IQL; the card: χ²- and TV-DVL each reach ≥ 0.90 normalised return (behaviour
    ≈ 0.23). Per seed the smaller of the two, against 0.90."""
    chi2, tv = np.asarray(chi2, float), np.asarray(tv, float)
    worst = np.minimum(chi2, tv)
    return ClaimCheck(
        claim=f"f-DVL (χ² and TV, λ={lam:g}) learns a near-optimal policy from ε-noisy data",
        quantity="min(χ²-DVL, TV-DVL) normalised return, per seed",
        values=worst,
        margin=DVL_FLOOR,
        numbers={"χ²-DVL": float(chi2.mean()), "TV-DVL": float(tv.mean())},
        detail=_nonfinite(worst),
        decimals=decimals,
    )


def xql_blowup_claim(max_loss, alpha: float, decimals: int = LOG10_DECIMALS) -> ClaimCheck:
    """The paper: XQL's Gumbel (exponential) loss is numerically unstable. Stress test: its largest value loss
    reaches ≥ 1e10 (an overflow counts as ≥ float32's largest number, log10 ≈ 38.5)."""
    logs = log10_loss(max_loss)
    n_over = int(np.isposinf(np.asarray(max_loss, float)).sum())
    return ClaimCheck(
        claim=f"Under the stress test XQL's value loss (α={alpha:g}) blows up",
        quantity="log10 of XQL's largest value loss (overflow = 38.5), per seed",
        values=logs,
        margin=XQL_BLOWUP_LOG10,
        numbers={"seeds that overflowed float32": float(n_over)},
        detail=_nonfinite(logs),
        decimals=decimals,
    )


def dvl_bounded_claim(max_chi2, max_tv, decimals: int = LOG10_DECIMALS) -> ClaimCheck:
    """The paper: χ²/TV losses remove the instability. Stress test: the larger of χ²-DVL's and TV-DVL's largest
    value losses stays < 1e4 (log10 ≤ 4)."""
    logs = np.maximum(log10_loss(max_chi2), log10_loss(max_tv))
    return ClaimCheck(
        claim="Under the same stress test the χ² and TV value losses stay bounded",
        quantity="log10 of max(χ²-DVL, TV-DVL) largest value loss, per seed",
        values=logs,
        margin=DVL_BOUND_LOG10,
        higher_is_better=False,
        numbers={"χ²-DVL": float(np.mean(log10_loss(max_chi2))), "TV-DVL": float(np.mean(log10_loss(max_tv)))},
        detail=_nonfinite(logs),
        decimals=decimals,
    )


def _nonfinite(values) -> str:
    return "" if np.isfinite(values).all() else "a value is not finite: the verdict is inconclusive"


# --- data ---------------------------------------------------------------------------------------------------


def make_world(grid: str, seed: int) -> gw.GridWorld:
    """The card's 8×8 map, or a random 12×12 map with 18 holes drawn from ``seed``."""
    return gw.GridWorld.slippery_8x8() if grid == "8x8" else gw.GridWorld.random(12, 18, seed=seed, slip=0.3)


def to_transitions(datasets, device, reward_scale: float = 1.0) -> Transitions:
    """Several data sets as one padded :class:`Transitions` ``(D, N)``: each row holds a data set's distinct
    transitions (s, a, s', r, done), weighted by how often they occur (the empirical distribution); padding rows
    have weight 0. Full-batch losses over these rows equal the means over all the steps, at a fraction of the cost."""
    rows = []
    for d in datasets:
        table = np.stack([d.observations, d.actions, d.next_observations, d.rewards, d.terminals], 1).astype(float)
        distinct, counts = np.unique(table, axis=0, return_counts=True)
        rows.append((distinct, counts / counts.sum()))
    n = max(len(distinct) for distinct, _ in rows)
    out = np.zeros((len(rows), n, 6))
    for i, (distinct, weight) in enumerate(rows):
        out[i, : len(distinct), :5], out[i, : len(distinct), 5] = distinct, weight
    as_long = torch.as_tensor(out[..., :3], dtype=torch.long, device=device)
    as_float = torch.as_tensor(out[..., 3:], dtype=torch.float32, device=device)
    return Transitions(
        s=as_long[..., 0],
        a=as_long[..., 1],
        s_next=as_long[..., 2],
        reward=as_float[..., 0] * reward_scale,
        done=as_float[..., 1],
        weight=as_float[..., 2],
    )


def support(datasets, mdp: gw.GridWorld, device) -> torch.Tensor:
    """``(D, S, A)`` bool: the actions each data set contains at each state."""
    counts = [sum(d.state_action_counts(mdp.n_states, mdp.n_actions) for d in group) for group in datasets]
    return torch.as_tensor(np.stack(counts) > 0, device=device)


def normalised_returns(worlds, policies: torch.Tensor, source) -> np.ndarray:
    """Exact normalised return of each policy table ``(K, S, A)`` in its seed's world."""
    tables = policies.detach().double().cpu().numpy()
    return np.array(
        [gw.normalised_return(worlds[i], gw.expected_return(worlds[i], t), 1.0) for t, i in zip(tables, source)]
    )


def _names(arms, seeds) -> list[str]:
    return [f"{arm.label} seed {s}" for arm in arms for s in seeds]


def _logged(step: int, n_steps: int, every: int) -> bool:
    return step % every == 0 or step == n_steps


# --- part A: ReCOIL, IQ-Learn, BC ------------------------------------------------------------------------


def run_recoil(ctx: RunContext[Knobs], worlds, seeds) -> tuple[list[ArmResult], list, list]:
    """Part A: ReCOIL(β), ReCOIL(β_high) and IQ-Learn trained together (arm-major problems), BC by counts."""
    p, dev = ctx.p, ctx.device
    n = len(seeds)
    expert_data = [
        gw.rollouts(w, gw.expert_policy(w), p.n_expert, np.random.default_rng([s, 1])) for w, s in zip(worlds, seeds)
    ]
    replay_data = [
        gw.rollouts(w, gw.uniform_policy(w), p.n_replay, np.random.default_rng([s, 2])) for w, s in zip(worlds, seeds)
    ]
    bc_arm, iq_arm, recoil_arm, recoil_high_arm = recoil_arms(p.beta, p.beta_high)
    trained = (recoil_arm, recoil_high_arm, iq_arm)
    betas = torch.tensor([p.beta, p.beta_high, 1.0], device=dev).repeat_interleave(n)  # (K,) arm-major
    source = torch.arange(n, device=dev).repeat(len(trained))
    mdp = worlds[0]
    both = support([(e, r) for e, r in zip(expert_data, replay_data)], mdp, dev)
    expert_only = support([(e,) for e in expert_data], mdp, dev)
    valid = torch.cat([both, both, expert_only])  # (K, S, A): IQ-Learn never sees D_S
    expert = to_transitions(expert_data, dev).select(source)
    replay = to_transitions(replay_data, dev).select(source)
    names = _names(trained, seeds)
    bc = [
        gw.normalised_return(w, gw.expected_return(w, gw.count_policy(e, w)), 1.0) for w, e in zip(worlds, expert_data)
    ]
    bar = ctx.bar(p.recoil_steps, f"part A: ReCOIL + IQ-Learn, {len(names)} problems")
    src = source.tolist()

    def log(step, losses, q):
        returns = normalised_returns(worlds, greedy_in_support(q, valid), src)
        for k in range(len(names)):
            arm, s = trained[k // n], seeds[k % n]
            ctx.history.log(step, arm.label, "normalised_return", returns[k], seed=s)
            ctx.history.log(step, arm.label, "dual_loss", float(losses[k]), seed=s)
        for s, value in zip(seeds, bc):
            ctx.history.log(step, bc_arm.label, "normalised_return", value, seed=s)

    def on_step(step, losses, q):
        check_arms(losses, step, names, weights=[q])
        bar.update(1)
        if _logged(step + 1, p.recoil_steps, p.log_every):
            log(step + 1, losses, q)

    q = train_recoil(
        torch.zeros(len(names), mdp.n_states, mdp.n_actions, device=dev),
        expert,
        replay,
        mdp.start,
        betas,
        gamma=mdp.gamma,
        tau=p.tau,
        valid=valid,
        n_steps=p.recoil_steps,
        lr=p.recoil_lr,
        on_step=on_step,
    )
    bar.close()
    ctx.check_weights(q, p.recoil_steps, "part A Q tables")
    returns = normalised_returns(worlds, greedy_in_support(q, valid), src).reshape(len(trained), n)
    v = soft_value(q, p.tau, valid).cpu().numpy().reshape(len(trained), n, -1)
    out = [ArmResult(bc_arm, "recoil", tuple(float(x) for x in bc))]
    out += [
        ArmResult(arm, "recoil", tuple(returns[a].tolist()), v_first_seed=tuple(v[a, 0].tolist()))
        for a, arm in enumerate(trained)
    ]
    return out, expert_data, replay_data


# --- part B: f-DVL, XQL, IQL (normal and stress test) ----------------------------------------------------


def run_dvl(ctx: RunContext[Knobs], worlds, seeds) -> tuple[list[ArmResult], list[float]]:
    """Part B: the five arms from zero tables and under the stress test, trained together (arm-major problems)."""
    p, dev = ctx.p, ctx.device
    n, mdp = len(seeds), worlds[0]
    behaviour = [gw.noisy_policy(gw.expert_policy(w), p.noise) for w in worlds]
    data = [
        gw.rollouts(w, b, p.n_behaviour, np.random.default_rng([s, 3])) for w, b, s in zip(worlds, behaviour, seeds)
    ]
    behaviour_returns = [gw.normalised_return(w, gw.expected_return(w, b), 1.0) for w, b in zip(worlds, behaviour)]
    table = to_transitions(data, dev, p.reward_scale)
    pairs = dvl_arms(p)
    arms = [a for a, _ in pairs] + [stress_arm(a) for a, _ in pairs]
    losses = [loss for _, loss in pairs for _ in seeds] * 2
    K = len(arms) * n
    source = torch.arange(n, device=dev).repeat(len(arms))
    gen = torch.Generator().manual_seed(ctx.seed)
    # the stress test: Q ~ N(0, stress_std²), one draw per seed shared by that seed's stress arms
    noise = torch.randn(n, mdp.n_states, mdp.n_actions, generator=gen) * p.stress_std
    q0 = torch.cat([torch.zeros(K // 2, mdp.n_states, mdp.n_actions), noise.repeat(len(pairs), 1, 1)])
    names = _names(arms, seeds)
    # Gumbel rows: an overflowing value loss is a result (train_dvl stops and freezes that arm), not an error
    measured = torch.tensor([loss.may_overflow for loss in losses], device=dev)
    running_max = torch.zeros(K, device=dev)
    bar = ctx.bar(p.dvl_steps, f"part B: f-DVL, XQL, IQL (+ stress), {K} problems")
    src = source.tolist()

    data_k = table.select(source)  # (K, N)

    def policies(q, v):
        w = awr_weights(q_at(q, data_k.s, data_k.a), v.gather(1, data_k.s), p.awr_beta) * data_k.weight
        return awr_policy(data_k.s, data_k.a, w, mdp.n_states, mdp.n_actions)

    def on_step(step, value_loss, q_loss, q, v):
        nonlocal running_max
        check_arms(torch.where(measured, 0.0, value_loss) + q_loss, step, names, weights=[q, v])
        running_max = torch.maximum(running_max, torch.nan_to_num(value_loss, nan=math.inf))
        bar.update(1)
        if _logged(step + 1, p.dvl_steps, p.log_every):
            returns = normalised_returns(worlds, policies(q, v), src)
            peak = log10_loss(running_max.cpu().numpy())
            for k in range(K):
                arm, s = arms[k // n], seeds[k % n]
                ctx.history.log(step + 1, arm.label, "normalised_return", returns[k], seed=s)
                ctx.history.log(step + 1, arm.label, "log10_max_value_loss", peak[k], seed=s)

    tables = train_dvl(
        q0.to(dev),
        torch.zeros(K, mdp.n_states, device=dev),
        data_k,
        losses,
        gamma=mdp.gamma,
        n_steps=p.dvl_steps,
        lr=p.dvl_lr,
        on_step=on_step,
    )
    bar.close()
    ctx.check_weights([tables.q, tables.v], p.dvl_steps, "part B Q/V tables")
    returns = normalised_returns(worlds, policies(tables.q, tables.v), src).reshape(len(arms), n)
    peak = tables.max_value_loss.cpu().numpy().reshape(len(arms), n)
    over = tables.overflow_step.cpu().numpy().reshape(len(arms), n)
    v = tables.v.cpu().numpy().reshape(len(arms), n, -1)
    out = [
        ArmResult(
            arm,
            "stress" if a >= len(pairs) else "dvl",
            tuple(returns[a].tolist()),
            max_value_loss=tuple(peak[a].tolist()),
            overflow_step=tuple(int(x) for x in over[a]),
            v_first_seed=tuple(v[a, 0].tolist()),
        )
        for a, arm in enumerate(arms)
    ]
    return out, behaviour_returns


# --- the run -------------------------------------------------------------------------------------------------


def final_metrics(arms: list[ArmResult], behaviour_returns) -> dict[str, float]:
    """Means over seeds: each arm's normalised return, and (part B) log10 of its largest value loss and the number
    of seeds whose value loss overflowed."""
    out = {"return_behaviour": float(np.mean(behaviour_returns))}
    for r in arms:
        out[f"return_{r.arm.key}"] = float(np.mean(r.returns))
        if r.max_value_loss:
            out[f"log10_max_value_loss_{r.arm.key}"] = float(np.mean(log10_loss(r.max_value_loss)))
            out[f"overflowed_{r.arm.key}"] = float(r.overflowed)
    return out


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    worlds = [make_world(p.grid, s) for s in seeds]
    part_a, expert_data, replay_data = run_recoil(ctx, worlds, seeds)
    part_b, behaviour_returns = run_dvl(ctx, worlds, seeds)
    arms = part_a + part_b
    by = {r.arm.key: r for r in arms}
    claims = [
        recoil_claim(by["recoil"].returns, by["bc"].returns, by["iq_learn"].returns, p.beta),
        dvl_return_claim(by["chi2"].returns, by["tv"].returns, p.lam),
        xql_blowup_claim(by["stress_xql"].max_value_loss, p.alpha),
        dvl_bounded_claim(by["stress_chi2"].max_value_loss, by["stress_tv"].max_value_loss),
    ]
    mdp = worlds[0]
    world = World(
        layout=mdp.layout,
        expert_visits=tuple(expert_data[0].state_action_counts(mdp.n_states, mdp.n_actions).sum(1).tolist()),
        replay_visits=tuple(replay_data[0].state_action_counts(mdp.n_states, mdp.n_actions).sum(1).tolist()),
        behaviour_returns=tuple(float(x) for x in behaviour_returns),
    )
    extras = {"arms": arms, "world": world, "seeds": list(seeds)}
    return Outcome(metrics=final_metrics(arms, behaviour_returns), claims=claims, extras=extras)

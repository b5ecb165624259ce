"""Regret-loss's experiment: the typed knobs, the loss-sequence families, the agents and baselines, the claims, run().

Per seed: a causal transformer is trained with the regret-loss on fresh sequences from the three training families
(:mod:`labkit.data.online_learning`), the same transformer with the supervised loss on the same stream, and (when
``linear_attention``) the single-layer linear self-attention model; every agent and the closed-form baselines
(Hedge/FTRL at η*, FTL, FTPL, uniform) then play the same fresh evaluation sequences of every family, including a
held-out one no model trains on. Self-play on a repeated matrix game closes the run.

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import (
    Arm,
    ClaimCheck,
    Outcome,
    RunContext,
    check_finite,
    check_weights,
    knob,
    method_run,
    nonfinite_note,
    params_of,
)
from labkit.data import online_learning as ol

from .figures import make_figures
from .method import (
    LinearSelfAttentionAgent,
    TransformerAgent,
    cumulative_regret,
    follow_the_leader,
    follow_the_perturbed_leader,
    hedge,
    hedge_eta,
    self_play,
    train_agent,
)


@dataclass(frozen=True)
class Knobs:
    k: float = knob(
        2.0, low=0.0, high=50.0, help="regret-loss sharpness k: f = exp(k·R); 0 = mean regret, large = worst"
    )
    horizon: int = knob(20, standard=40, full=100, low=4, high=512, help="horizon T (rounds per sequence)")
    n_steps: int = knob(200, standard=400, full=20_000, low=1, high=1_000_000, help="Adam steps per agent")
    n_actions: int = knob(3, full=5, low=2, high=32, main=False, help="actions d (the game demo needs d = 3)")
    n_per_group: int = knob(8, low=1, high=1024, main=False, help="N: sequences per soft-max group")
    n_groups: int = knob(
        8, standard=8, full=16, low=1, high=1024, main=False, help="G: groups per step (batch = G·N sequences)"
    )
    lr: float = knob(1e-3, low=1e-6, high=0.1, log=True, main=False, help="Adam learning rate (transformer)")
    h: str = knob("linear", choices=("linear", "relu_sq"), main=False, help="h(R): R, or max(R, 0)²")
    d_model: int = knob(16, standard=32, full=64, low=4, high=1024, main=False, help="transformer width")
    n_heads: int = knob(4, low=1, high=32, main=False, help="attention heads")
    n_layers: int = knob(2, full=4, low=1, high=12, main=False, help="transformer layers")
    supervised: bool = knob(True, main=False, help="also train the transformer with the supervised loss")
    linear_attention: bool = knob(False, standard=True, full=True, main=False, help="also train the 1-layer LSA")
    lsa_lr: float = knob(0.02, low=1e-5, high=1.0, log=True, main=False, help="Adam learning rate (LSA model)")
    self_play: bool = knob(True, main=False, help="repeated biased rock-paper-scissors: model vs model")
    n_eval: int = knob(512, full=2048, low=8, high=100_000, main=False, help="fresh evaluation sequences per family")
    n_seeds: int = knob(3, standard=5, full=5, low=1, high=100, main=False, help="seeds (new model, data, eval)")
    log_every: int = knob(25, standard=50, full=500, low=1, high=100_000, main=False, help="log every this many steps")

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        if self.self_play and self.n_actions != 3:
            raise ValueError(f"self_play plays rock-paper-scissors (3 actions): set n_actions=3, not {self.n_actions}")


PARAMS = params_of(Knobs)
MAIN_METRIC = "train_regret"

#: the agents and baselines, in the order of tables and legends
REGRET = Arm("regret", "transformer · regret-loss")
SUPERVISED = Arm("supervised", "transformer · supervised")
LSA = Arm("lsa", "linear attention · regret-loss")
HEDGE = Arm("hedge", "Hedge (η*)")
FTL = Arm("ftl", "FTL")
FTPL = Arm("ftpl", "FTPL (η*)")
UNIFORM = Arm("uniform", "uniform")
#: margins, fixed before the run from the card's claim check (the paper gives no number for the toy)
HEDGE_RATIO = 0.75  # worst-family regret of the model ≤ 0.75 × Hedge's
FTL_RATIO = 0.25  # ≤ 0.25 × FTL's
STOCHASTIC_SLACK = 0.3  # stochastic family: model ≤ FTL + 0.3
DECIMALS = 2


@dataclass(frozen=True)
class ArmRegrets:
    """One agent's mean final regret Regret_T per family (mean over the evaluation sequences), one value per seed,
    and its worst-family per-round regret max_family Regret_t / t over the training families, per seed ``(S, T)``."""

    arm: Arm
    final: dict[str, tuple[float, ...]]
    per_round: np.ndarray

    def worst(self, families=ol.TRAIN_FAMILIES) -> np.ndarray:
        """Per seed, the largest family-mean regret over ``families``."""
        return np.max([self.final[f] for f in families], axis=0)


@dataclass(frozen=True)
class SelfPlay:
    """Self-play on a matrix game: L1 distance of the running-mean strategies to Nash per round, per seed."""

    game: str
    nash: tuple[float, ...]
    model_distance: np.ndarray  # (S, T)
    hedge_distance: np.ndarray  # (T,)
    model_average: tuple[float, ...]  # seed 0's final time-averaged row strategy


# --- the claims ---------------------------------------------------------------------------------------------------


def hedge_claim(model_worst, hedge_worst, margin: float = HEDGE_RATIO) -> ClaimCheck:
    """Headline: trained with the regret-loss alone, the transformer's worst-family regret is at most
    ``margin`` × that of worst-case-tuned Hedge (FTRL)."""
    model_worst, hedge_worst = np.asarray(model_worst, float), np.asarray(hedge_worst, float)
    ratio = model_worst / hedge_worst
    return ClaimCheck(
        claim=f"the regret-loss transformer (no labels) has at most {margin:g}× the worst-family regret of Hedge (η*)",
        quantity="worst training-family mean Regret_T, transformer / Hedge, per seed",
        values=ratio,
        margin=margin,
        higher_is_better=False,
        headline=True,
        numbers={"transformer": float(model_worst.mean()), "Hedge": float(hedge_worst.mean())},
        detail=nonfinite_note(ratio),
        decimals=DECIMALS,
    )


def ftl_claim(model_worst, ftl_worst, margin: float = FTL_RATIO) -> ClaimCheck:
    """Supporting: far below FTL, whose regret is linear on alternating losses."""
    model_worst, ftl_worst = np.asarray(model_worst, float), np.asarray(ftl_worst, float)
    ratio = model_worst / ftl_worst
    return ClaimCheck(
        claim=f"the regret-loss transformer has at most {margin:g}× the worst-family regret of FTL",
        quantity="worst training-family mean Regret_T, transformer / FTL, per seed",
        values=ratio,
        margin=margin,
        higher_is_better=False,
        numbers={"transformer": float(model_worst.mean()), "FTL": float(ftl_worst.mean())},
        detail=nonfinite_note(ratio),
        decimals=DECIMALS,
    )


def stochastic_claim(model_stochastic, ftl_stochastic, slack: float = STOCHASTIC_SLACK) -> ClaimCheck:
    """Supporting: robustness costs little where FTL is good (stochastic losses)."""
    return ClaimCheck.paired(
        "on stochastic losses the regret-loss transformer is no more than 0.3 worse than FTL",
        "stochastic family mean Regret_T, transformer − FTL, per seed",
        model_stochastic,
        ftl_stochastic,
        labels=("transformer", "FTL"),
        margin=slack,
        higher_is_better=False,
        detail=nonfinite_note(np.asarray(model_stochastic, float) - np.asarray(ftl_stochastic, float)),
        decimals=DECIMALS,
    )


def sublinear_claim(per_round_half, per_round_full, horizon: int) -> ClaimCheck:
    """Supporting: no-regret means Regret_t / t falls as t grows: at t = T it is below its value at t = T/2."""
    return ClaimCheck.paired(
        "the regret-loss transformer's regret grows sub-linearly: Regret_t/t falls from t = T/2 to t = T",
        f"worst training-family Regret_t/t at t = {horizon} minus at t = {horizon // 2}, per seed",
        per_round_full,
        per_round_half,
        labels=(f"t={horizon}", f"t={horizon // 2}"),
        margin=0.0,
        higher_is_better=False,
        detail=nonfinite_note(np.asarray(per_round_full, float) - np.asarray(per_round_half, float)),
        decimals=3,
    )


def supervised_claim(model_worst, supervised_worst) -> ClaimCheck:
    """Supporting (the paper's contrast): the regret-loss beats supervised pre-training on best-in-hindsight labels."""
    return ClaimCheck.paired(
        "the regret-loss gives a lower worst-family regret than the supervised loss (best-action labels)",
        "worst training-family mean Regret_T, regret-loss − supervised, per seed",
        model_worst,
        supervised_worst,
        labels=("regret-loss", "supervised"),
        margin=0.0,
        higher_is_better=False,
        detail=nonfinite_note(np.asarray(model_worst, float) - np.asarray(supervised_worst, float)),
        decimals=DECIMALS,
    )


# --- training and evaluation ------------------------------------------------------------------------------------


def fit(
    agent: torch.nn.Module,
    sample: Callable[[int], torch.Tensor],
    *,
    series: str,
    objective: str,
    n_steps: int,
    lr: float,
    n_groups: int,
    n_per_group: int,
    k: float,
    h: str,
    log_every: int,
    log: Callable[[int, float, float, float], None] | None = None,
    bar=None,
    check: Callable = check_finite,
    check_model: Callable = check_weights,
) -> torch.nn.Module:
    """:func:`train_agent` with the divergence contract (``check``/``check_model`` are the run's ``ctx.check`` and
    ``ctx.check_weights``): every loss checked, the weights at every logged step and at the end;
    ``log(step, loss, mean regret, worst regret)`` at logged steps."""

    def on_step(step, loss, regrets, model):
        value = check(loss, step, series)
        if step % log_every == 0 or step == n_steps:
            check_model(model, step, series)
            if log is not None:
                log(step, value, float(regrets.mean()), float(regrets.max()))
        if bar is not None:
            bar.update(1)

    train_agent(
        agent,
        sample,
        objective=objective,
        n_steps=n_steps,
        lr=lr,
        n_groups=n_groups,
        n_per_group=n_per_group,
        k=k,
        h=h,
        on_step=on_step,
    )
    check_model(agent, n_steps, series)
    return agent


def baseline_policies(losses: torch.Tensor, eta: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The closed-form algorithms on ``losses`` ``(B, T, d)``, keyed by arm key."""
    return {
        HEDGE.key: hedge(losses, eta),
        FTL.key: follow_the_leader(losses),
        FTPL.key: follow_the_perturbed_leader(losses, eta, gen),
        UNIFORM.key: torch.full_like(losses, 1.0 / losses.shape[-1]),
    }


@torch.no_grad()
def evaluate(agents: dict[str, torch.nn.Module], eval_sets: dict[str, torch.Tensor], eta: float, gen) -> dict:
    """Mean cumulative regret curve ``(T,)`` per (arm key, family)."""
    out = {}
    for family, losses in eval_sets.items():
        policies = {key: agent(losses) for key, agent in agents.items()} | baseline_policies(losses, eta, gen)
        for key, policy in policies.items():
            out[key, family] = cumulative_regret(policy, losses).mean(0).numpy()
    return out


def run_self_play(agent: torch.nn.Module, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Model vs itself on biased RPS: L1 distance of the two running-mean strategies to Nash (mean of the two
    players) per round, and the row player's final time-average."""
    game = ol.biased_rps()
    with torch.no_grad():
        row, col = self_play(agent, agent, game, horizon)
    return nash_distance(row, col, game.nash), row.mean(0).numpy()


def nash_distance(row: torch.Tensor, col: torch.Tensor, nash: torch.Tensor) -> np.ndarray:
    """½(‖π̄_t^row − p*‖₁ + ‖π̄_t^col − p*‖₁) of the running means π̄_t = (1/t) Σ_{s≤t} π_s, ``(T,)``."""
    t = torch.arange(1, len(row) + 1).view(-1, 1)
    dist = [((x.cumsum(0) / t) - nash).abs().sum(-1) for x in (row, col)]
    return (0.5 * (dist[0] + dist[1])).numpy()


def hedge_self_play(horizon: int) -> np.ndarray:
    eta = hedge_eta(horizon, 3)
    game = ol.biased_rps()
    row, col = self_play(lambda x: hedge(x, eta), lambda x: hedge(x, eta), game, horizon)
    return nash_distance(row, col, game.nash)


# --- the run ------------------------------------------------------------------------------------------------------


def _arms(p: Knobs) -> list[Arm]:
    return [REGRET] + [SUPERVISED] * p.supervised + [LSA] * p.linear_attention + [HEDGE, FTL, FTPL, UNIFORM]


@method_run(Knobs, figures=make_figures, threads={"quick": 1, "standard": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    arms, d, horizon = _arms(p), p.n_actions, p.horizon
    eta = hedge_eta(horizon, d)
    families = ol.TRAIN_FAMILIES + ol.HELD_OUT_FAMILIES
    curves = {(a.key, f): [] for a in arms for f in families}
    demo, play, lsa_values = {}, [], []
    trained = [REGRET] + [SUPERVISED] * p.supervised + [LSA] * p.linear_attention
    bar = ctx.bar(len(seeds) * len(trained) * p.n_steps, f"{len(trained)} agents × {len(seeds)} seeds")
    for s, seed in enumerate(seeds):
        agents = {}
        for arm in trained:
            torch.manual_seed(seed)
            stream = torch.Generator().manual_seed(1000 * seed + 1)  # every agent of a seed sees the same stream
            lsa = arm is LSA
            agent = (
                LinearSelfAttentionAgent(d) if lsa else TransformerAgent(d, horizon, p.d_model, p.n_heads, p.n_layers)
            )

            def log(step, loss, mean_r, worst_r, arm=arm, seed=seed):
                ctx.history.log(step, arm.label, "train_loss", loss, seed=seed)
                ctx.history.log(step, arm.label, "train_regret", mean_r, seed=seed)
                ctx.history.log(step, arm.label, "train_worst_regret", worst_r, seed=seed)

            agents[arm.key] = fit(
                agent,
                lambda n, g=stream: ol.sample_mixture(n, horizon, d, g),
                series=f"{arm.label}, seed {seed}",
                objective="supervised" if arm is SUPERVISED else "regret",
                n_steps=p.n_steps,
                lr=p.lsa_lr if lsa else p.lr,
                n_groups=p.n_groups,
                n_per_group=p.n_per_group,
                k=p.k,
                h=p.h,
                log_every=p.log_every,
                log=log,
                bar=bar,
                check=ctx.check,
                check_model=ctx.check_weights,
            ).eval()
        if LSA.key in agents:
            lsa_values.append(agents[LSA.key].value.detach()[:, :d].numpy().copy())
        gen = torch.Generator().manual_seed(1000 * seed + 2)  # evaluation sequences: never trained on
        eval_sets = {f: ol.sample_family(f, p.n_eval, horizon, d, gen) for f in families}
        label = {a.key: a.label for a in arms}
        for (key, family), curve in evaluate(agents, eval_sets, eta, gen).items():
            curves[key, family].append(curve)
            for t, value in enumerate(curve, start=1):
                ctx.history.log(t, label[key], f"regret_{family}", value, seed=seed)
        if s == 0:
            seq = eval_sets["alternating"][:1]
            with torch.no_grad():
                demo = {"losses": seq[0].numpy()} | {
                    key: pol[0].numpy()
                    for key, pol in ({REGRET.key: agents[REGRET.key](seq)} | baseline_policies(seq, eta, gen)).items()
                    if key != UNIFORM.key
                }
        if p.self_play:
            play.append(run_self_play(agents[REGRET.key], horizon))
    bar.close()
    results = {
        a.key: ArmRegrets(
            arm=a,
            final={f: tuple(float(c[-1]) for c in curves[a.key, f]) for f in families},
            per_round=np.max([np.asarray(curves[a.key, f]) for f in ol.TRAIN_FAMILIES], axis=0)
            / np.arange(1, horizon + 1),
        )
        for a in arms
    }
    model, ftl, hedge_r = results[REGRET.key], results[FTL.key], results[HEDGE.key]
    claims = [
        hedge_claim(model.worst(), hedge_r.worst()),
        ftl_claim(model.worst(), ftl.worst()),
        stochastic_claim(model.final["stochastic"], ftl.final["stochastic"]),
        sublinear_claim(model.per_round[:, horizon // 2 - 1], model.per_round[:, -1], horizon),
    ]
    if p.supervised:
        claims.append(supervised_claim(model.worst(), results[SUPERVISED.key].worst()))
    metrics = {f"regret_{a.key}_{f}": float(np.mean(results[a.key].final[f])) for a in arms for f in families}
    metrics |= {f"worst_regret_{a.key}": float(results[a.key].worst().mean()) for a in arms}
    extras = {"arms": arms, "regrets": results, "demo": demo, "seeds": seeds, "eta": eta, "families": families}
    if p.self_play:
        game = ol.biased_rps()
        extras["self_play"] = SelfPlay(
            game=game.name,
            nash=tuple(game.nash.tolist()),
            model_distance=np.stack([x[0] for x in play]),
            hedge_distance=hedge_self_play(horizon),
            model_average=tuple(play[0][1].tolist()),
        )
        metrics["nash_distance_model"] = float(extras["self_play"].model_distance[:, -1].mean())
        metrics["nash_distance_hedge"] = float(extras["self_play"].hedge_distance[-1])
    if lsa_values:
        extras["lsa_value"] = np.mean(lsa_values, axis=0)
    return Outcome(metrics=metrics, claims=claims, extras=extras)

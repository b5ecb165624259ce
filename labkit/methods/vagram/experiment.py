"""VaGraM's experiment: Pendulum-v1 with distracting dimensions, a small dynamics model fitted by MSE or VaGraM,
the policy each model supports (one-step lookahead through it), the claims, run().

Setup (the card's teaching scale). The value function is computed once: value iteration on a (θ, θ̇) grid, then a
tanh MLP fitted to it (:mod:`labkit.substrates.pendulum`); it ignores the distractors, so their value gradient is
exactly 0 (the idealised case: a learned critic would give small, non-zero gradients there). Per seed: a distractor
matrix A, training and held-out transitions drawn uniformly in (θ, θ̇, u) with z ~ N(0, I). Two models per seed, the
same width, one fitted with L_MSE and one with L_VaGraM; both then drive the true pendulum by one-step lookahead
(r + γ·V(f̂(s, u))) from the same start states. The number of distractors D is swept (the main D and the extra
``sweep_distractors``).

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, check_arms, knob, method_run, nonfinite_note, params_of
from labkit.substrates import pendulum as pend

from .figures import make_figures
from .method import DynamicsEnsemble, fit_models, itervaml_loss, model_based_control


@dataclass(frozen=True)
class Knobs:
    width: int = knob(
        8, low=1, high=1024, log=True, help="hidden width of the one-layer dynamics model (small = limited)"
    )
    n_distractors: int = knob(12, low=0, high=256, help="D distracting dimensions z' = 2·tanh(Az) in the state")
    quantile: float = knob(0.95, low=0.5, high=1.0, help="value-gradient norms are clipped at this batch quantile")
    sweep_distractors: str = knob(
        "0", standard="0,4,24", full="0,4,24,48", main=False, help="other D values also trained (comma list, '' none)"
    )
    n_seeds: int = knob(3, standard=5, full=10, low=1, high=100, main=False, help="seeds: A, data, models, starts")
    n_train: int = knob(5000, standard=20_000, low=16, high=1_000_000, main=False, help="training transitions")
    n_test: int = knob(2000, low=16, high=1_000_000, main=False, help="held-out transitions (value error, MSE)")
    steps: int = knob(400, standard=1500, full=5000, low=1, high=1_000_000, main=False, help="Adam steps per model")
    lr: float = knob(1e-2, low=1e-5, high=1.0, log=True, main=False, help="Adam learning rate of the models")
    batch: int = knob(256, low=1, high=65_536, main=False, help="minibatch size")
    gamma: float = knob(0.95, low=0.5, high=0.999, main=False, help="discount of value iteration and planning")
    grid: int = knob(41, standard=61, full=101, low=5, high=401, main=False, help="value-iteration grid per axis")
    value_steps: int = knob(300, standard=1000, low=1, high=100_000, main=False, help="Adam steps fitting V's MLP")
    n_starts: int = knob(8, standard=16, low=1, high=1024, main=False, help="control episodes per model")
    horizon: int = knob(200, low=1, high=10_000, main=False, help="control episode length (Pendulum-v1: 200)")
    plan_torques: int = knob(11, low=2, high=101, main=False, help="torques tried by the one-step lookahead")
    log_every: int = knob(100, low=1, high=100_000, main=False, help="log the held-out errors every this many steps")

    def __post_init__(self):
        counts = parse_counts(self.sweep_distractors)
        if any(d < 0 or d > 256 for d in counts):
            raise ValueError(f"sweep_distractors={self.sweep_distractors!r}: each D must be in [0, 256]")
        if self.batch > self.n_train:
            raise ValueError(f"batch={self.batch} is larger than n_train={self.n_train}")


PARAMS = params_of(Knobs)
MAIN_METRIC = "value_error"

#: the two losses, in the order the models are stacked (MSE block first, then VaGraM)
ARMS = (Arm("mse", "MSE (MLE)"), Arm("vagram", "VaGraM"))
#: VI torques (the card: 5 torques in [−2, 2]) and the value MLP's width and learning rate
VI_TORQUES, VALUE_WIDTH, VALUE_LR, VI_SWEEPS = 5, 64, 1e-2, 150
#: the card's margin for the value error: VaGraM's held-out value error at most half the MSE model's
VE_RATIO_MARGIN = 0.5
RETURN_DECIMALS, RATIO_DECIMALS = 0, 2


def parse_counts(text: str) -> list[int]:
    """ "0, 4,24" → [0, 4, 24]; '' → []; anything else → ValueError."""
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ValueError(f"sweep_distractors={text!r}: expected a comma list of integers such as '0,4,24'") from None


def distractor_counts(p: Knobs) -> list[int]:
    """The D values trained, sorted, the main one included."""
    return sorted(set(parse_counts(p.sweep_distractors)) | {p.n_distractors})


# --- typed records ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmResult:
    """One loss at one D: numbers per seed (seed order of the run)."""

    arm: Arm
    n_distractors: int
    returns: tuple[float, ...]  # mean undiscounted return over the start states
    value_error: tuple[float, ...]  # held-out (V(f̂(s, a)) − V(s'))²
    mse: tuple[float, ...]  # held-out Σ_j e_j², all coordinates
    mse_pendulum: tuple[float, ...]  # mean e_j² over the 3 pendulum coordinates
    mse_distractor: tuple[float, ...]  # mean e_j² over the D distractor coordinates (nan when D = 0)


@dataclass(frozen=True)
class ValueSummary:
    """The value function: the VI grid (for the figure) and the MLP's fit error on it."""

    grid: pend.ValueGrid
    fit_rmse: float


# --- the claims ---------------------------------------------------------------------------------------------


def return_claim(ret_vagram, ret_mse, n_distractors: int, width: int) -> ClaimCheck:
    """Headline (the paper: with a small model and distracting dimensions, VaGraM beats MLE): the per-seed return of
    the policy each model supports, VaGraM − MSE, margin 0."""
    v, m = np.asarray(ret_vagram, float), np.asarray(ret_mse, float)
    return ClaimCheck.paired(
        f"With a small model (width {width}) and {n_distractors} distracting dimensions, the VaGraM model supports a "
        "better policy than the MSE (MLE) model",
        "return of one-step lookahead through the model on the true pendulum, VaGraM − MSE, per seed",
        v,
        m,
        labels=("return VaGraM", "return MSE"),
        margin=0.0,
        headline=True,
        detail=nonfinite_note(v - m),
        decimals=RETURN_DECIMALS,
    )


def value_error_claim(ve_vagram, ve_mse, n_distractors: int) -> ClaimCheck:
    """Supporting (the card's toy claim): VaGraM's held-out value error is at most half the MSE model's."""
    v, m = np.asarray(ve_vagram, float), np.asarray(ve_mse, float)
    ratio = v / m
    return ClaimCheck(
        claim=f"VaGraM predicts the value of the next state far better than MSE ({n_distractors} distractors)",
        quantity="held-out value error VE = mean (V(f̂(s,a)) − V(s'))², VaGraM / MSE, per seed",
        values=ratio,
        margin=VE_RATIO_MARGIN,
        higher_is_better=False,
        numbers={"VE MSE": float(m.mean()), "VE VaGraM": float(v.mean())},
        detail=nonfinite_note(ratio),
        decimals=RATIO_DECIMALS,
    )


def distractor_trend_claim(gap_low, gap_high, d_low: int, d_high: int) -> ClaimCheck:
    """Supporting (the paper's Hopper + 5 / + 15 distractors): VaGraM's return advantage grows with D."""
    low, high = np.asarray(gap_low, float), np.asarray(gap_high, float)
    return ClaimCheck.paired(
        f"VaGraM's return advantage over MSE is larger with {d_high} distractors than with {d_low}",
        f"(VaGraM − MSE return) at D={d_high} minus the same at D={d_low}, per seed",
        high,
        low,
        labels=(f"gap D={d_high}", f"gap D={d_low}"),
        margin=0.0,
        detail=nonfinite_note(high - low),
        decimals=RETURN_DECIMALS,
    )


# --- the toy world ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stacked:
    """G data sets stacked: s, s2 (G, N, n), a (G, N, 1), r (G, N)."""

    s: torch.Tensor
    a: torch.Tensor
    r: torch.Tensor
    s2: torch.Tensor


def make_data(seeds, n_distractors: int, n: int, salt: int) -> tuple[Stacked, torch.Tensor]:
    """One data set per seed (its own A); returns the stack and the A matrices (G, D, D)."""
    mats = torch.stack([pend.distractor_matrix(n_distractors, s) for s in seeds])
    sets = [
        pend.sample_transitions(n, mats[g], torch.Generator().manual_seed(1000 * s + 7 * n_distractors + salt))
        for g, s in enumerate(seeds)
    ]
    return Stacked(*(torch.stack([getattr(t, f) for t in sets]) for f in ("s", "a", "r", "s2"))), mats


def true_step(mats: torch.Tensor):
    """The real system for (K, E, 3+D) states, model k living in world k mod G: (s, a) → (s', r)."""

    def env_step(s, a):
        theta, theta_dot = pend.angle_of(s)
        th2, dot2, r = pend.step(theta, theta_dot, a[..., 0])
        sets = torch.arange(s.shape[0]) % mats.shape[0]
        z2 = pend.distractor_step_batched(s[..., pend.N_PENDULUM :], mats[sets])
        return torch.cat([pend.observe(th2, dot2), z2], -1), r

    return env_step


def state_reward(s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The known reward r(s, u) of Pendulum-v1 from a (..., ≥3) state."""
    theta, theta_dot = pend.angle_of(s)
    return pend.reward(theta, theta_dot, u)


def start_states(seeds, n_distractors: int, n_starts: int) -> torch.Tensor:
    """Pendulum-v1's reset (θ ~ U[−π, π], θ̇ ~ U[−1, 1]) plus z ~ N(0, I): (G, E, 3+D)."""
    out = []
    for s in seeds:
        gen = torch.Generator().manual_seed(50_000 + s)
        theta = (torch.rand(n_starts, generator=gen) * 2 - 1) * math.pi
        theta_dot = torch.rand(n_starts, generator=gen) * 2 - 1
        z = torch.randn(n_starts, n_distractors, generator=gen)
        out.append(torch.cat([pend.observe(theta, theta_dot), z], -1))
    return torch.stack(out)


def fit_value(p: Knobs, seed: int, ctx: RunContext | None = None):
    """Value iteration on the grid, then the MLP fitted to it (shared by every seed and D)."""
    grid = pend.value_iteration(p.grid, VI_TORQUES, p.gamma, VI_SWEEPS)

    def check(step, loss):
        if ctx is not None:
            ctx.check(loss, step, "value MLP")

    net = pend.fit_value_net(grid, width=VALUE_WIDTH, steps=p.value_steps, lr=VALUE_LR, seed=seed, on_step=check)
    th, dot = np.meshgrid(grid.theta, grid.theta_dot, indexing="ij")
    obs = pend.observe(torch.tensor(th.ravel(), dtype=torch.float32), torch.tensor(dot.ravel(), dtype=torch.float32))
    rmse = float(np.sqrt(((net(obs).numpy() - grid.values.ravel()) ** 2).mean()))
    return net, ValueSummary(grid, rmse)


def series_names(n_distractors: int, seeds) -> list[str]:
    return [f"{arm.label} D={n_distractors} seed {s}" for arm in ARMS for s in seeds]


def train_models(data: Stacked, value_net, *, width, steps, lr, batch, quantile, seed, n_distractors, on_log=None):
    """Both losses on every seed's data (K = 2·G models, MSE block first); every step's losses and weights are
    checked (DivergenceError names the arm)."""
    n_sets, n_state = data.s.shape[0], data.s.shape[-1]
    names = series_names(n_distractors, range(seed, seed + n_sets))
    gen = torch.Generator().manual_seed(seed)
    in_scale = torch.ones(n_state + 1)
    in_scale[2], in_scale[-1] = pend.MAX_SPEED, pend.MAX_TORQUE
    model = DynamicsEnsemble(2 * n_sets, n_state, 1, width, in_scale, generator=gen)
    use_vagram = torch.arange(2 * n_sets) >= n_sets

    def on_step(step, losses):
        check_arms(losses, step, names, weights=list(model.parameters()))
        if on_log is not None:
            on_log(step + 1, model)

    return fit_models(
        model,
        data,
        use_vagram,
        value_net,
        steps=steps,
        lr=lr,
        batch=batch,
        quantile=quantile,
        generator=gen,
        on_step=on_step,
    )


@torch.no_grad()
def held_out_errors(model: DynamicsEnsemble, test: Stacked, value_net) -> dict[str, torch.Tensor]:
    """(K,) value error, all-coordinate MSE, and per-coordinate MSE on pendulum / distractor dims."""
    sets = torch.arange(model.w1.shape[0]) % test.s.shape[0]
    pred, _ = model(test.s[sets], test.a[sets])
    sq = (pred - test.s2[sets]) ** 2  # (K, N, n)
    dist = sq[..., pend.N_PENDULUM :]
    return {
        "value_error": itervaml_loss(value_net, pred, test.s2[sets]),
        "mse": sq.sum(-1).mean(-1),
        "mse_pendulum": sq[..., : pend.N_PENDULUM].mean((-1, -2)),
        "mse_distractor": dist.mean((-1, -2)) if dist.shape[-1] else torch.full(sets.shape, float("nan")),
    }


def run_distractor_count(ctx: RunContext[Knobs], seeds, d: int, value_net, bar) -> list[ArmResult]:
    """Data, both models, held-out errors and control returns for one D."""
    p = ctx.p
    train, mats = make_data(seeds, d, p.n_train, salt=0)
    test, _ = make_data(seeds, d, p.n_test, salt=1)
    labels = [f"{arm.label} D={d}" for arm in ARMS for _ in seeds]
    seed_of = list(seeds) * 2

    def on_log(step, model):
        if step % p.log_every and step != p.steps:
            bar.update(1)
            return
        errs = held_out_errors(model, test, value_net)
        for k, (label, s) in enumerate(zip(labels, seed_of)):
            for metric in ("value_error", "mse"):
                ctx.history.log(step, label, metric, float(errs[metric][k]), seed=s)
        ctx.check_weights(model, step, f"models D={d}")
        bar.update(1)

    model = train_models(
        train,
        value_net,
        width=p.width,
        steps=p.steps,
        lr=p.lr,
        batch=p.batch,
        quantile=p.quantile,
        seed=ctx.seed,
        n_distractors=d,
        on_log=on_log,
    )
    ctx.check_weights(model, p.steps, f"models D={d}")
    errs = held_out_errors(model, test, value_net)
    starts = start_states(seeds, d, p.n_starts).repeat(2, 1, 1)
    torques = torch.linspace(-pend.MAX_TORQUE, pend.MAX_TORQUE, p.plan_torques)
    returns, _ = model_based_control(
        model, value_net, state_reward, true_step(mats), starts, torques, p.gamma, p.horizon
    )
    out = []
    g = len(seeds)
    for a, arm in enumerate(ARMS):
        block = slice(a * g, (a + 1) * g)
        out.append(
            ArmResult(
                arm=arm,
                n_distractors=d,
                returns=tuple(returns[block].mean(-1).tolist()),
                **{k: tuple(v[block].tolist()) for k, v in errs.items()},
            )
        )
    return out


def oracle_returns(p: Knobs, seeds, value_net) -> tuple[float, ...]:
    """The same lookahead through the *true* dynamics (no distractors: they do not change the pendulum)."""
    starts = start_states(seeds, 0, p.n_starts)
    torques = torch.linspace(-pend.MAX_TORQUE, pend.MAX_TORQUE, p.plan_torques)
    env_step = true_step(torch.zeros(len(seeds), 0, 0))

    def true_model(s, a):
        return env_step(s, a)

    returns, _ = model_based_control(true_model, value_net, state_reward, env_step, starts, torques, p.gamma, p.horizon)
    return tuple(returns.mean(-1).tolist())


def final_metrics(results: list[ArmResult], main_d: int, oracle) -> dict[str, float]:
    out = {"return_oracle": float(np.mean(oracle))}
    for r in results:
        tag = f"{r.arm.key}_d{r.n_distractors}"
        out[f"return_{tag}"] = float(np.mean(r.returns))
        out[f"value_error_{tag}"] = float(np.mean(r.value_error))
        out[f"mse_{tag}"] = float(np.mean(r.mse))
    out["return_gap"] = out[f"return_vagram_d{main_d}"] - out[f"return_mse_d{main_d}"]
    return out


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    counts = distractor_counts(p)
    value_net, value = fit_value(p, ctx.seed, ctx)
    bar = ctx.bar(p.steps * len(counts), f"MSE + VaGraM, D ∈ {counts}, {len(seeds)} seeds")
    results = [r for d in counts for r in run_distractor_count(ctx, seeds, d, value_net, bar)]
    bar.close()
    oracle = oracle_returns(p, seeds, value_net)
    by = {(r.arm.key, r.n_distractors): r for r in results}
    main_mse, main_vg = by[("mse", p.n_distractors)], by[("vagram", p.n_distractors)]
    claims = [
        return_claim(main_vg.returns, main_mse.returns, p.n_distractors, p.width),
        value_error_claim(main_vg.value_error, main_mse.value_error, p.n_distractors),
    ]
    if len(counts) > 1:
        lo, hi = counts[0], counts[-1]
        gap = {d: np.subtract(by[("vagram", d)].returns, by[("mse", d)].returns) for d in (lo, hi)}
        claims.append(distractor_trend_claim(gap[lo], gap[hi], lo, hi))
    extras = {"arms": results, "value": value, "oracle": oracle, "counts": counts, "seeds": list(seeds)}
    return Outcome(metrics=final_metrics(results, p.n_distractors, oracle), claims=claims, extras=extras)

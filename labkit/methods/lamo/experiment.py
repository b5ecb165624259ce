"""LaMo's experiment: the typed knobs, the low-data gridworld, the arms (LaMo, LaMo λ = 0, a DT from scratch, LaMo on
a random-init LM), the claims, run().

Data: the card's 7×7 single-goal gridworld (:meth:`labkit.substrates.gridworld.GridWorld.lamo_7x7`, slip 0.1, H 30),
a few episodes of the ε-noisy value-iteration expert per seed. States enter the DT as (row, col)/6 coordinates,
returns-to-go are undiscounted (the only reward is 1 at the goal, so R̂ ∈ {0, 1}). Evaluation: return-conditioned
rollouts (R̂_1 = ``target_return``, actions drawn from the DT's softmax as DT does on Atari) on the known model,
``eval_episodes`` fixed seeded episodes per (arm, seed), scored with D4RL's normalised return (0 = uniform policy,
100 = expert, both exact). Every arm of a seed sees the same data, the same window draws, the same text batches
and the same evaluation episodes.

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, nonfinite_note, params_of
from labkit.models.adapters import count_parameters
from labkit.substrates import gridworld as gw
from labkit.substrates import pretrained_lm as plm

from .figures import make_figures
from .method import DecisionTransformer, Trajectories, lamo_backbone, language_loss, rollout, train_dt


@dataclass(frozen=True)
class Knobs:
    lam: float = knob(0.1, low=0.0, high=10.0, help="λ, weight of the auxiliary language loss (paper: 0.1)")
    n_episodes: int = knob(20, low=2, high=5000, help="offline episodes per seed (the low-data regime: few)")
    epsilon: float = knob(0.5, low=0.0, high=1.0, help="behaviour noise: a random action with probability ε")
    lora_rank: int = knob(8, low=1, high=64, help="LoRA rank r on each block's qkv")
    context: int = knob(5, standard=10, low=1, high=30, help="K, timesteps in the DT's context (3K tokens)")
    n_steps: int = knob(60, standard=300, full=3000, low=1, high=100_000, main=False, help="training steps per arm")
    n_seeds: int = knob(3, standard=5, full=10, low=1, high=100, main=False, help="seeds: new data and new models")
    lr: float = knob(3e-3, low=1e-6, high=1.0, log=True, main=False, help="AdamW lr of embeddings and heads")
    lm_lr: float = knob(
        3e-3, low=1e-6, high=1.0, log=True, main=False, help="AdamW lr inside the LM (LoRA; all blocks for the DT)"
    )
    lora_alpha: float = knob(16.0, low=0.1, high=1024.0, main=False, help="LoRA α (scale α/r; paper 32/16)")
    lora_dropout: float = knob(0.1, low=0.0, high=0.9, main=False, help="dropout on LoRA's input")
    batch_size: int = knob(16, standard=32, full=64, low=1, high=4096, main=False, help="K-step windows per batch")
    text_batch: int = knob(16, low=1, high=4096, main=False, help="arithmetic lines per language batch")
    weight_decay: float = knob(1e-5, low=0.0, high=1.0, main=False, help="AdamW weight decay")
    warmup: int = knob(10, standard=50, full=250, low=0, high=100_000, main=False, help="linear warm-up steps")
    clip: float = knob(0.25, low=1e-3, high=100.0, main=False, help="gradient-norm clip")
    target_return: float = knob(1.0, low=0.0, high=1.0, main=False, help="R̂_1 at evaluation (1 = reach the goal)")
    eval_episodes: int = knob(50, standard=200, low=1, high=10_000, main=False, help="evaluation episodes per arm")
    log_every: int = knob(20, standard=50, low=1, high=100_000, main=False, help="log losses every this many steps")
    random_init: bool = knob(True, main=False, help="also train LaMo on a RANDOM-init LM (isolates pretraining)")
    data_sweep: bool = knob(False, standard=True, main=False, help=f"also train LaMo and DT at {(10, 50, 200)} eps.")

    def __post_init__(self):
        if self.warmup > self.n_steps:
            raise ValueError(f"warmup={self.warmup} must not exceed n_steps={self.n_steps}")
        if self.log_every > self.n_steps:
            raise ValueError(f"log_every={self.log_every} must not exceed n_steps={self.n_steps}")


PARAMS = params_of(Knobs)
MAIN_METRIC = "action_loss"

#: data sizes of the standard preset's sweep (the card's data ratios), LaMo and DT only
SWEEP_EPISODES = (10, 50, 200)
#: the card's toy claims: non-inferiority margin (5 points of normalised return = the card's 0.05 on a 0–1 scale) and
#: the language-retention bound (0.1 nats)
NON_INFERIORITY = -5.0
RETENTION_NATS = 0.1
RETURN_DECIMALS = 0
LOSS_DECIMALS = 2

LAMO = Arm("lamo", "LaMo")
LAMO_NO_LM = Arm("lamo_lam0", "LaMo λ=0")
DT = Arm("dt", "DT (scratch)")
RANDOM_INIT = Arm("lamo_random", "LaMo random-init LM")


@dataclass(frozen=True)
class ArmOutcome:
    """One arm's numbers, one value per seed (seed order of the run)."""

    arm: Arm
    normalised_return: tuple[float, ...]
    success: tuple[float, ...]  # fraction of evaluation episodes that reached the goal
    lm_loss_start: tuple[float, ...]  # held-out arithmetic loss of the LM before DT training (nats/token)
    lm_loss_end: tuple[float, ...]
    trainable: int  # trainable parameters
    total: int  # all parameters
    paths_seed0: tuple[tuple[int, ...], ...]  # the first evaluation episodes' visited states, first seed

    @property
    def lm_rise(self) -> tuple[float, ...]:
        return tuple(e - s for s, e in zip(self.lm_loss_start, self.lm_loss_end))


# --- the claims (pure functions of per-seed numbers) -----------------------------------------------------


def beats_dt_claim(lamo, dt) -> ClaimCheck:
    """Headline (the paper: with little data LaMo beats DT): LaMo − DT in normalised return, margin 0."""
    return ClaimCheck.paired(
        "with few data, LaMo (pretrained LM, frozen + LoRA, λ·L_LM) beats a DT from scratch",
        "normalised return (0 random, 100 expert), LaMo − DT, per seed",
        lamo,
        dt,
        labels=("LaMo", "DT"),
        headline=True,
        detail=nonfinite_note(lamo, dt),
        decimals=RETURN_DECIMALS,
    )


def non_inferiority_claim(lamo, dt) -> ClaimCheck:
    """The card's toy claim: LaMo ≥ DT − 5 points (0.05 on the card's 0–1 scale)."""
    return ClaimCheck.paired(
        "LaMo is at least as good as a DT from scratch (non-inferiority, 5 points)",
        "normalised return, LaMo − DT, per seed",
        lamo,
        dt,
        labels=("LaMo", "DT"),
        margin=NON_INFERIORITY,
        detail=nonfinite_note(lamo, dt),
        decimals=RETURN_DECIMALS,
    )


def retention_claim(rise_lamo, lam: float) -> ClaimCheck:
    """The card: with λ > 0 the LM's held-out text loss rises by at most 0.1 nats over DT training."""
    rise = np.asarray(rise_lamo, float)
    return ClaimCheck(
        claim=f"with the language loss (λ={lam:g}) the LM keeps its language skill",
        quantity="held-out arithmetic loss after − before DT training (nats/token), LaMo, per seed",
        values=rise,
        margin=RETENTION_NATS,
        higher_is_better=False,
        detail=nonfinite_note(rise),
        decimals=LOSS_DECIMALS,
    )


def forgetting_claim(rise_no_lm, rise_lamo) -> ClaimCheck:
    """The card: without it (λ = 0) the rise is clearly larger, at least twice LaMo's: rise₀ − 2·rise_λ ≥ 0."""
    rise0, rise = np.asarray(rise_no_lm, float), np.asarray(rise_lamo, float)
    return ClaimCheck(
        claim="without the language loss (λ=0) the LM forgets more: at least twice LaMo's rise",
        quantity="rise(λ=0) − 2·rise(LaMo) of the held-out arithmetic loss (nats/token), per seed",
        values=rise0 - 2 * rise,
        margin=0.0,
        numbers={"rise λ=0": float(rise0.mean()), "rise LaMo": float(rise.mean())},
        detail=nonfinite_note(rise0, rise),
        decimals=LOSS_DECIMALS,
    )


def pretraining_claim(lamo, random_init) -> ClaimCheck:
    """The paper's ablation: the pre-trained weights help (LaMo beats the same model on a random-init LM)."""
    return ClaimCheck.paired(
        "the pretrained LM is what helps: LaMo beats the same recipe on a random-init LM",
        "normalised return, LaMo − LaMo(random-init LM), per seed",
        lamo,
        random_init,
        labels=("LaMo", "random-init"),
        detail=nonfinite_note(lamo, random_init),
        decimals=RETURN_DECIMALS,
    )


# --- the toy -------------------------------------------------------------------------------------------------


def make_world() -> gw.GridWorld:
    return gw.GridWorld.lamo_7x7()


def offline_data(mdp: gw.GridWorld, n_episodes: int, epsilon: float, seed: int):
    """``n_episodes`` of the ε-noisy expert π_ε = (1 − ε)·π* + ε·uniform (an :class:`OfflineDataset`)."""
    return gw.rollouts(mdp, gw.noisy_policy(gw.expert_policy(mdp), epsilon), n_episodes, np.random.default_rng(seed))


def trajectories(mdp: gw.GridWorld, data, context: int) -> Trajectories:
    """The DT's padded tensors: (row, col)/6 coordinates, the recorded actions, undiscounted R̂_t."""
    return Trajectories.from_episodes(
        data.returns_to_go(), mdp.coordinates(data.observations), data.actions, data.episode_lengths, context
    )


def grid_step(mdp: gw.GridWorld, rng: np.random.Generator):
    """One step of every episode on the known model: s' ~ P(·|s, a), r = 1 on entering G, terminal at G or a hole."""

    def step(states, actions):
        probs = mdp.P[states, actions]  # (n, S)
        nxt = np.minimum((probs.cumsum(1) < rng.random(len(states))[:, None]).sum(1), mdp.n_states - 1)
        return nxt, mdp.goal_reward * (nxt == mdp.goal), mdp.terminal[nxt]

    return step


def build_model(arm: Arm, p: Knobs, mdp: gw.GridWorld, pretrained) -> DecisionTransformer:
    """LaMo arms: a frozen LM (pretrained, or random for the ablation) with LoRA and MLP embeddings/head. DT: a fresh
    TinyLM of the same shape, every weight trainable, DT's linear embeddings and head."""
    if arm.key == DT.key:
        return DecisionTransformer(plm.new_model(plm.QUICK_CONFIG), 2, mdp.n_actions, p.context, mdp.horizon, False)
    base = plm.new_model(plm.QUICK_CONFIG) if arm.key == RANDOM_INIT.key else pretrained
    lm = lamo_backbone(base, p.lora_rank, p.lora_alpha, p.lora_dropout)
    return DecisionTransformer(lm, 2, mdp.n_actions, p.context, mdp.horizon, True)


def make_arms(p: Knobs) -> list[Arm]:
    return [LAMO, LAMO_NO_LM, DT] + ([RANDOM_INIT] if p.random_init else [])


@dataclass(frozen=True)
class Trained:
    """One trained (arm, seed): the normalised return, success rate, LM loss before/after, the rollouts."""

    normalised_return: float
    success: float
    lm_before: float
    lm_after: float
    trainable: int
    total: int
    paths: tuple[tuple[int, ...], ...]


def train_arm(ctx: RunContext, arm: Arm, seed: int, data, mdp, pretrained, text, held_out, *, log=True) -> Trained:
    """Build, train (checked on every loss and at every logged step) and evaluate one (arm, seed)."""
    p = ctx.p
    torch.manual_seed(1000 * seed + 1)  # the same init draws for the new modules of every LaMo arm
    model = build_model(arm, p, mdp, pretrained)
    lam = 0.0 if arm.key in (LAMO_NO_LM.key, DT.key) else p.lam
    series = f"{arm.label} seed {seed}"

    def held_loss() -> float:
        with torch.no_grad():
            return float(language_loss(model.lm, held_out.prompts, held_out.answers, held_out.mask))

    before = held_loss()

    def on_step(step, losses):
        ctx.check(losses["action"], step, f"{series} action loss")
        if losses["language"] is not None:
            ctx.check(losses["language"], step, f"{series} language loss")
        if step % p.log_every == 0 or step == p.n_steps:
            ctx.check_weights(model, step, series)
            if log:
                ctx.history.log(step, arm.label, "action_loss", losses["action"].item(), seed=seed)
                ctx.history.log(step, arm.label, "lm_held_out", held_loss(), seed=seed)

    train_dt(
        model,
        trajectories(mdp, data, p.context),
        text,
        steps=p.n_steps,
        batch_size=p.batch_size,
        text_batch=p.text_batch,
        lam=lam,
        lr=p.lr,
        lm_lr=p.lm_lr,
        weight_decay=p.weight_decay,
        warmup=p.warmup,
        clip=p.clip,
        generator=torch.Generator().manual_seed(seed),
        text_generator=torch.Generator().manual_seed(seed + 7919),
        on_step=on_step,
    )
    ctx.check_weights(model, p.n_steps, series)
    starts = np.full(p.eval_episodes, mdp.start)
    out = rollout(
        model,
        starts,
        grid_step(mdp, np.random.default_rng(10_000 + seed)),
        mdp.coordinates,
        target_return=p.target_return,
        horizon=mdp.horizon,
        generator=torch.Generator().manual_seed(20_000 + seed),
    )
    paths = tuple(tuple(int(s) for s in row[: n + 1]) for row, n in zip(out.states[:3], out.lengths[:3]))
    return Trained(
        normalised_return=float(gw.normalised_return(mdp, out.returns.mean())),
        success=float((out.returns > 0).mean()),
        lm_before=before,
        lm_after=held_loss(),
        trainable=count_parameters(model),
        total=count_parameters(model, trainable_only=False),
        paths=paths,
    )


def outcome_of(arm: Arm, runs: list[Trained]) -> ArmOutcome:
    return ArmOutcome(
        arm=arm,
        normalised_return=tuple(r.normalised_return for r in runs),
        success=tuple(r.success for r in runs),
        lm_loss_start=tuple(r.lm_before for r in runs),
        lm_loss_end=tuple(r.lm_after for r in runs),
        trainable=runs[0].trainable,
        total=runs[0].total,
        paths_seed0=runs[0].paths,
    )


@dataclass(frozen=True)
class SweepPoint:
    """The standard preset's data sweep: LaMo and DT at one data size, per seed."""

    n_episodes: int
    lamo: tuple[float, ...]
    dt: tuple[float, ...]


@method_run(Knobs, figures=make_figures, threads={"quick": 1, "standard": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    mdp = make_world()
    pretrained = plm.pretrained_lm(plm.QUICK_CONFIG, progress=ctx.show_progress)
    text, held_out = plm.pretraining_data(plm.QUICK_CONFIG)
    arms = make_arms(p)
    sizes = [s for s in SWEEP_EPISODES if s != p.n_episodes] if p.data_sweep else []
    bar = ctx.bar(len(seeds) * (len(arms) + 2 * len(sizes)), f"LaMo: {len(arms)} arms × {len(seeds)} seeds")
    runs: dict[str, list[Trained]] = {a.key: [] for a in arms}
    behaviour, sweep = [], {n: ([], []) for n in sizes}
    for seed in seeds:
        data = offline_data(mdp, p.n_episodes, p.epsilon, seed)
        behaviour.append(float(gw.normalised_return(mdp, data.episode_returns().mean())))
        for arm in arms:
            runs[arm.key].append(train_arm(ctx, arm, seed, data, mdp, pretrained, text, held_out))
            bar.update(1)
        for n in sizes:
            more = offline_data(mdp, n, p.epsilon, seed)
            for arm, out in zip((LAMO, DT), sweep[n]):
                out.append(
                    train_arm(ctx, arm, seed, more, mdp, pretrained, text, held_out, log=False).normalised_return
                )
                bar.update(1)
    bar.close()
    outcomes = [outcome_of(a, runs[a.key]) for a in arms]
    by = {o.arm.key: o for o in outcomes}
    lamo, dt, no_lm = by[LAMO.key], by[DT.key], by[LAMO_NO_LM.key]
    claims = [
        beats_dt_claim(lamo.normalised_return, dt.normalised_return),
        non_inferiority_claim(lamo.normalised_return, dt.normalised_return),
        retention_claim(lamo.lm_rise, p.lam),
        forgetting_claim(no_lm.lm_rise, lamo.lm_rise),
    ]
    if p.random_init:
        claims.append(pretraining_claim(lamo.normalised_return, by[RANDOM_INIT.key].normalised_return))
    points = [SweepPoint(p.n_episodes, lamo.normalised_return, dt.normalised_return)]
    points += [SweepPoint(n, tuple(sweep[n][0]), tuple(sweep[n][1])) for n in sizes]
    metrics = {"behaviour_return": float(np.mean(behaviour))}
    for o in outcomes:
        metrics[f"return_{o.arm.key}"] = float(np.mean(o.normalised_return))
        metrics[f"success_{o.arm.key}"] = float(np.mean(o.success))
        metrics[f"lm_rise_{o.arm.key}"] = float(np.mean(o.lm_rise))
        metrics[f"trainable_{o.arm.key}"] = float(o.trainable)
    metrics["gain_lamo_minus_dt"] = metrics["return_lamo"] - metrics["return_dt"]
    for pt in points[1:]:
        metrics[f"gain_lamo_minus_dt_{pt.n_episodes}ep"] = float(np.mean(pt.lamo) - np.mean(pt.dt))
    extras = {
        "arms": outcomes,
        "behaviour": tuple(behaviour),
        "sweep": sorted(points, key=lambda pt: pt.n_episodes),
        "layout": mdp.layout,
        "seeds": list(seeds),
    }
    return Outcome(metrics=metrics, claims=claims, extras=extras)

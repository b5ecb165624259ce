"""NetLLM's experiment: the typed knobs, the ABR world per seed, the experience pool, the arms (NetLLM, its
ablations, a policy learned from scratch, the classic rules), the claims and run().

Per seed (each seed is a new world): a video, disjoint trace sets drawn from
:func:`labkit.substrates.abr.make_traces` — training traces (one pool episode each), validation and test traces
from the same distribution, and "unseen" traces with twice the variance of log-throughput — then an experience
pool played by six behaviour policies (BBA, rate-based, RobustMPC, and each with ε-random actions), then every
learned arm trained on that pool and every policy evaluated on the same validation, test and unseen traces (one
session per trace, paired across policies). The strongest classic rule of a seed is the one with the best mean
QoE on the VALIDATION traces; nothing is chosen on test traces, and the adapted models are used as they end
training (the official code keeps the epoch with the best test return; labkit does not).

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, nonfinite_note, params_of
from labkit.models.adapters import count_parameters
from labkit.substrates import abr

from .figures import make_figures
from .method import (
    NETWORKING_HEAD,
    TOKEN_ANSWER,
    NetLLMAgent,
    NetLLMPolicy,
    Trajectories,
    dd_lrna,
    low_rank_backbone,
    returns_to_go,
)

BACKBONES = ("addition-quick", "addition-standard")


@dataclass(frozen=True)
class Knobs:
    pool_episodes: int = knob(
        120,
        standard=300,
        full=2000,
        low=6,
        high=100_000,
        help="experience-pool episodes of 48 chunks, one training trace each, split over the 6 behaviour policies",
    )
    window: int = knob(
        4, standard=5, full=20, low=1, high=abr.N_CHUNKS, help="context window w in steps (8 tokens each)"
    )
    lora_r: int = knob(8, full=32, low=1, high=256, help="LoRA rank r on the LM's fused q/k/v projections")
    train_steps: int = knob(250, standard=1200, full=8000, low=1, high=1_000_000, help="DD-LRNA mini-batches")
    lr: float = knob(3e-3, full=1e-3, low=1e-6, high=1.0, log=True, help="AdamW learning rate")
    target_return_scale: float = knob(
        1.0, low=0.1, high=2.0, help="inference target return = this × the pool's largest return-to-go"
    )
    no_pretrain: bool = knob(
        False, standard=True, full=True, help="also train the ablation with a random-init copy of the LM"
    )
    token_answer: bool = knob(
        False, standard=True, full=True, help="also train the ablation whose LM writes the level as text"
    )
    batch_size: int = knob(16, full=64, low=1, high=4096, main=False, help="windows per mini-batch")
    feature_dim: int = knob(32, standard=64, full=256, low=2, high=4096, main=False, help="encoder feature width")
    lora_alpha: float = knob(32.0, low=0.1, high=1024.0, main=False, help="LoRA α (scale α/r), 32 as in the code")
    lora_dropout: float = knob(0.05, low=0.0, high=0.9, main=False, help="LoRA dropout (0.05 as in the code)")
    weight_decay: float = knob(1e-4, low=0.0, high=1.0, main=False, help="AdamW weight decay")
    warmup: int = knob(25, standard=100, full=800, low=1, high=1_000_000, main=False, help="linear warm-up steps")
    clip: float = knob(0.25, low=1e-3, high=100.0, main=False, help="gradient-norm clip (0.25 as in the code)")
    return_scale: float = knob(
        10.0,
        low=1e-3,
        high=1e6,
        log=True,
        main=False,
        help="R̂ = Σ r̃ / scale; the official code uses 1000 (its returns are then ≤ 0.05); 10 keeps R̂ near 1–5",
    )
    eps: float = knob(0.2, low=0.0, high=1.0, main=False, help="ε of the noisy behaviour policies in the pool")
    scratch_steps: int = knob(
        500, standard=3000, full=10_000, low=1, high=1_000_000, main=False, help="steps of the from-scratch MLP"
    )
    n_val: int = knob(10, standard=20, full=50, low=1, high=10_000, main=False, help="validation traces per seed")
    n_test: int = knob(20, standard=40, full=100, low=1, high=10_000, main=False, help="test traces per seed")
    n_unseen: int = knob(20, standard=40, full=100, low=1, high=10_000, main=False, help="unseen traces per seed")
    unseen_variance: float = knob(
        2.0, low=0.1, high=10.0, main=False, help="variance of log-throughput on the unseen traces, × training's"
    )
    mpc_horizon: int = knob(3, low=1, high=4, main=False, help="RobustMPC horizon h (6^h plans)")
    n_seeds: int = knob(3, standard=3, full=5, low=1, high=100, main=False, help="independent worlds (seed, seed+1…)")
    backbone: str = knob(
        "addition-quick", full="addition-standard", choices=BACKBONES, main=False, help="the kit's pretrained LM"
    )
    log_every: int = knob(25, standard=100, full=200, low=1, high=1_000_000, main=False, help="log every n steps")
    return_sweep: bool = knob(
        False, standard=True, full=True, main=False, help="QoE against the target-return scale (first seed)"
    )

    def __post_init__(self):
        if self.warmup > self.train_steps:
            raise ValueError(f"warmup={self.warmup} must be ≤ train_steps={self.train_steps}")


PARAMS = params_of(Knobs)
MAIN_METRIC = "train_loss"

NETLLM = Arm("netllm", "NetLLM (pre-trained LM + LoRA)")
NO_PRETRAIN = Arm("no_pretrain", "NetLLM, random-init LM")
TOKEN = Arm("token_answer", "NetLLM, token answer")
SCRATCH = Arm("scratch", "MLP from scratch")
BBA = Arm("bba", "BBA")
RATE = Arm("rate", "rate-based")
MPC = Arm("mpc", "RobustMPC")
POOL = Arm("pool", "pool behaviours (mean)")
RULES = (BBA, RATE, MPC)
SPLITS = ("val", "test", "unseen")
SWEEP_SCALES = (0.5, 0.8, 1.0, 1.2)
#: decimals of the printed claim numbers (QoE per chunk); see the notebook for the cross-CPU check
QOE_DECIMALS = 2
#: the card's tolerance against rate-based (QoE per chunk)
RATE_MARGIN = -0.05


# --- typed records -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """One policy on one seed's traces: QoE per chunk per trace, per split, and the test QoE's three terms."""

    arm: Arm
    val: np.ndarray
    test: np.ndarray
    unseen: np.ndarray
    bitrate: float  # mean over test chunks, Mbit/s
    rebuffer_penalty: float  # μ·ρ, mean over test chunks
    smooth_penalty: float  # |ΔR|, mean over test chunks

    def split(self, name: str) -> np.ndarray:
        return getattr(self, name)


@dataclass(frozen=True)
class SeedOutcome:
    """Everything one seed produced."""

    seed: int
    scores: dict[str, Scores]  # by arm key
    best_rule: str  # the rule with the best validation QoE
    trainable: dict[str, int]
    total_params: dict[str, int]
    forwards_per_chunk: dict[str, float]
    invalid_rate: float  # of the token-answer ablation (NaN when it did not run)
    pool_size: int


@dataclass(frozen=True)
class EpisodeView:
    """One test session of the first seed, for the figure: NetLLM and BBA on the same trace."""

    throughput_mbps: np.ndarray  # (slots,) the trace from the session's start
    time_s: dict[str, np.ndarray]
    bitrate_mbps: dict[str, np.ndarray]
    buffer_s: dict[str, np.ndarray]
    rebuffer_s: dict[str, np.ndarray]
    qoe: dict[str, float]


# --- the claims (pure functions of per-seed numbers) ---------------------------------------------------------


def beats_rules_claim(netllm, best_rule, split: str = "test", headline: bool = True) -> ClaimCheck:
    """Headline (paper: +14.5–36.6% QoE over the best ABR algorithms): NetLLM's QoE above the strongest classic
    rule (picked per seed on validation traces), margin 0, on test traces of the training distribution."""
    return ClaimCheck.paired(
        "NetLLM's adapted LM policy reaches a higher QoE than the best classic ABR rule",
        f"QoE per chunk on {split} traces, NetLLM − best rule (chosen on validation), mean over traces, per seed",
        netllm,
        best_rule,
        labels=("NetLLM", "best rule"),
        margin=0.0,
        headline=headline,
        detail=nonfinite_note(netllm, best_rule),
        decimals=QOE_DECIMALS,
    )


def generalises_claim(netllm, best_rule) -> ClaimCheck:
    """Paper: NetLLM generalises to unseen environments, still above the best rule there."""
    return ClaimCheck.paired(
        "NetLLM still beats the best classic rule on unseen traces (2× the variance of log-throughput)",
        "QoE per chunk on unseen traces, NetLLM − best rule (chosen on validation), per seed",
        netllm,
        best_rule,
        labels=("NetLLM", "best rule"),
        margin=0.0,
        detail=nonfinite_note(netllm, best_rule),
        decimals=QOE_DECIMALS,
    )


def pool_claim(netllm, pool_mean) -> ClaimCheck:
    """The card's toy claim: at least the average behaviour policy of the pool it learned from."""
    return ClaimCheck.paired(
        "NetLLM matches or beats the average policy of its experience pool",
        "QoE per chunk on test traces, NetLLM − mean of the 6 behaviour policies, per seed",
        netllm,
        pool_mean,
        labels=("NetLLM", "pool mean"),
        margin=0.0,
        detail=nonfinite_note(netllm, pool_mean),
        decimals=QOE_DECIMALS,
    )


def rate_claim(netllm, rate) -> ClaimCheck:
    """The card: NetLLM ≥ rate-based − 0.05 QoE per chunk."""
    return ClaimCheck.paired(
        "NetLLM is no worse than rate-based by more than 0.05 QoE per chunk",
        "QoE per chunk on test traces, NetLLM − rate-based, per seed",
        netllm,
        rate,
        labels=("NetLLM", "rate-based"),
        margin=RATE_MARGIN,
        detail=nonfinite_note(netllm, rate),
        decimals=QOE_DECIMALS,
    )


def pretraining_claim(netllm, no_pretrain) -> ClaimCheck:
    """Paper (ablation): the pre-trained weights matter; a random-init LM adapted the same way does worse."""
    return ClaimCheck.paired(
        "Pre-training helps: NetLLM beats the same recipe on a random-init LM",
        "QoE per chunk on unseen traces, pre-trained − random-init LM, per seed",
        netllm,
        no_pretrain,
        labels=("pre-trained", "random init"),
        margin=0.0,
        detail=nonfinite_note(netllm, no_pretrain),
        decimals=QOE_DECIMALS,
    )


def scratch_claim(netllm, scratch) -> ClaimCheck:
    """Paper: the adapted LM generalises better than learning-based ABR trained for the task (Pensieve, GENET);
    here a small MLP trained from scratch on the same pool, compared on unseen traces."""
    return ClaimCheck.paired(
        "NetLLM generalises better than a small policy learned from scratch on the same experience",
        "QoE per chunk on unseen traces, NetLLM − MLP from scratch, per seed",
        netllm,
        scratch,
        labels=("NetLLM", "MLP"),
        margin=0.0,
        detail=nonfinite_note(netllm, scratch),
        decimals=QOE_DECIMALS,
    )


# --- the world of one seed -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    video: abr.Video
    train: abr.Traces
    evaluation: abr.Traces  # validation, then test, then unseen
    sizes: tuple[int, int, int]

    def split(self, values: np.ndarray, name: str) -> np.ndarray:
        a, b, _ = self.sizes
        bounds = {"val": (0, a), "test": (a, a + b), "unseen": (a + b, len(values))}[name]
        return values[bounds[0] : bounds[1]]


def make_world(p: Knobs, seed: int) -> World:
    """A video and disjoint trace sets: train (the pool's), validation, test, unseen (v = unseen_variance)."""
    rng = np.random.default_rng([seed, 9])
    video = abr.make_video(rng)
    train = abr.make_traces(rng, p.pool_episodes, name="train")
    val = abr.make_traces(rng, p.n_val, name="val")
    test = abr.make_traces(rng, p.n_test, name="test")
    unseen = abr.make_traces(rng, p.n_unseen, variance_scale=p.unseen_variance, name="unseen")
    return World(video, train, abr.Traces.concat([val, test, unseen], "evaluation"), (p.n_val, p.n_test, p.n_unseen))


def rules(p: Knobs) -> dict[str, abr.Policy]:
    return {BBA.key: abr.BBA(), RATE.key: abr.RateBased(), MPC.key: abr.RobustMPC(p.mpc_horizon)}


def behaviours(p: Knobs, seed: int) -> dict[str, abr.Policy]:
    """The pool's six behaviour policies: the three rules and each with ε-random actions."""
    rng = np.random.default_rng([seed, 11])
    noisy = {f"{k}_eps": abr.EpsilonGreedy(r, p.eps, rng) for k, r in rules(p).items()}
    return {**rules(p), **noisy}


def score(arm: Arm, episodes: abr.Episodes, world: World) -> Scores:
    q = episodes.qoe_per_chunk
    test = slice(world.sizes[0], world.sizes[0] + world.sizes[1])
    return Scores(
        arm,
        world.split(q, "val"),
        world.split(q, "test"),
        world.split(q, "unseen"),
        float(episodes.bitrate_mbps[test].mean()),
        float(abr.REBUF_PENALTY * episodes.rebuffer_s[test].mean()),
        float(abr.SMOOTH_PENALTY * episodes.smooth_mbps[test].mean()),
    )


def pool_trajectories(pool: abr.ExperiencePool, return_scale: float) -> tuple[Trajectories, float, float]:
    """The pool as tensors with R̂ (min-max over the pool's rewards, as the official code); and (r_min, r_max)."""
    r_min, r_max = float(pool.rewards.min()), float(pool.rewards.max())
    data = Trajectories(
        torch.as_tensor(pool.states, dtype=torch.float32),
        torch.as_tensor(pool.actions, dtype=torch.long),
        returns_to_go(pool.rewards, r_min, r_max, return_scale),
    )
    return data, r_min, r_max


# --- the from-scratch baseline: an MLP on Pensieve's state, behaviour cloning on the same pool ------------------


class ScratchMLP(nn.Module):
    """state (…, 6, 6) → 64 → 64 → 6 logits; trained from random init on the pool's (state, action) pairs."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(-2), nn.Linear(36, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 6)
        )

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)


class MLPAgent(abr.Rule):
    def __init__(self, model: ScratchMLP):
        self.model = model

    @torch.no_grad()
    def act(self, obs: abr.Observation) -> np.ndarray:
        device = next(self.model.parameters()).device
        return self.model(torch.as_tensor(obs.state, dtype=torch.float32, device=device)).argmax(-1).cpu().numpy()


def train_scratch(model: ScratchMLP, data: Trajectories, *, steps, batch_size, lr, weight_decay, generator, on_step):
    """Cross-entropy on the pool's actions, AdamW, ``batch_size`` random (state, action) pairs per step."""
    states, actions = data.states.flatten(0, 1), data.actions.flatten()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(actions), (batch_size,), generator=generator).to(actions.device)
        loss = nn.functional.cross_entropy(model(states[idx]), actions[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        on_step(step, loss)
    model.eval()


# --- the experiment ------------------------------------------------------------------------------------------


def load_backbone(name: str, progress: bool):
    from labkit.substrates import pretrained_lm as plm

    config = plm.QUICK_CONFIG if name == "addition-quick" else plm.STANDARD_CONFIG
    return plm.pretrained_lm(config, progress=progress), config


def learned_arms(p: Knobs) -> list[Arm]:
    return [NETLLM] + ([NO_PRETRAIN] if p.no_pretrain else []) + ([TOKEN] if p.token_answer else []) + [SCRATCH]


def make_netllm(p: Knobs, arm: Arm, backbone, config, seed: int) -> NetLLMPolicy:
    """NetLLM (or an ablation) for ``arm``, initialised from ``seed``."""
    from labkit.substrates.pretrained_lm import new_model

    torch.manual_seed(seed)
    lm = new_model(config) if arm is NO_PRETRAIN else backbone
    answer = TOKEN_ANSWER if arm is TOKEN else NETWORKING_HEAD
    return NetLLMPolicy(low_rank_backbone(lm, p.lora_r, p.lora_alpha, p.lora_dropout), p.feature_dim, answer)


def train_arm(ctx: RunContext[Knobs], arm: Arm, seed: int, data: Trajectories, backbone, config, bar):
    """Train one learned arm on the pool, logging its loss; returns the model."""
    p = ctx.p
    series = f"{arm.label} (seed {seed})"
    gen = torch.Generator().manual_seed(seed)
    model = (ScratchMLP() if arm is SCRATCH else make_netllm(p, arm, backbone, config, seed)).to(ctx.device)
    steps = p.scratch_steps if arm is SCRATCH else p.train_steps

    def on_step(step: int, loss: torch.Tensor) -> None:
        value = ctx.check(loss, step, series)
        if step % p.log_every == 0 or step == steps:
            ctx.check_weights(model, step, series)
            ctx.history.log(step, arm.label, "train_loss", value, seed=seed)
        bar.update(1)

    if arm is SCRATCH:
        train_scratch(
            model, data, steps=steps, batch_size=256, lr=1e-3, weight_decay=p.weight_decay, generator=gen,
            on_step=on_step,
        )  # fmt: skip
    else:
        dd_lrna(
            model, data, steps=steps, batch_size=p.batch_size, window=p.window, lr=p.lr, weight_decay=p.weight_decay,
            warmup=p.warmup, clip=p.clip, generator=gen, on_step=on_step,
        )  # fmt: skip
    ctx.check_weights(model, steps, series)
    return model


def run_seed(ctx: RunContext[Knobs], seed: int, backbone, config, bar) -> tuple[SeedOutcome, dict]:
    p = ctx.p
    world = make_world(p, seed)
    pool = abr.collect_pool(behaviours(p, seed), world.video, world.train)
    data, r_min, r_max = pool_trajectories(pool, p.return_scale)
    data = data.to(ctx.device)
    target = p.target_return_scale * float(data.returns.max())
    episodes = {arm.key: abr.rollout(r, world.video, world.evaluation) for arm, r in zip(RULES, rules(p).values())}
    # the pool's six behaviours on the evaluation traces: the three rules (played above) and their ε-noisy copies
    noisy = [b for k, b in behaviours(p, seed).items() if k not in episodes]
    behaviour_q = [episodes[a.key].qoe_per_chunk for a in RULES]
    behaviour_q += [abr.rollout(b, world.video, world.evaluation).qoe_per_chunk for b in noisy]
    scores = {arm.key: score(arm, episodes[arm.key], world) for arm in RULES}
    pool_q = np.mean(behaviour_q, axis=0)
    scores[POOL.key] = Scores(POOL, *(world.split(pool_q, s) for s in SPLITS), np.nan, np.nan, np.nan)
    trainable, total, forwards, invalid, models = {}, {}, {}, float("nan"), {}
    for arm in learned_arms(p):
        model = train_arm(ctx, arm, seed, data, backbone, config, bar)
        models[arm.key] = model
        trainable[arm.key], total[arm.key] = count_parameters(model), count_parameters(model, trainable_only=False)
        if arm is SCRATCH:
            agent = MLPAgent(model)
        else:
            agent = NetLLMAgent(model, p.window, target, r_min, r_max, p.return_scale)
        episodes[arm.key] = abr.rollout(agent, world.video, world.evaluation)
        scores[arm.key] = score(arm, episodes[arm.key], world)
        if arm is not SCRATCH:
            forwards[arm.key] = agent.forwards / world.video.n_chunks
        if arm is TOKEN:
            invalid = agent.invalid / agent.decisions
    best = max(RULES, key=lambda a: scores[a.key].val.mean()).key
    out = SeedOutcome(seed, scores, best, trainable, total, forwards, invalid, pool.n_steps)
    extras = {"episodes": episodes, "world": world, "models": models, "target": target, "norm": (r_min, r_max)}
    return out, extras


def episode_view(world: World, episodes: dict, keys=(NETLLM.key, BBA.key), index: int = 0) -> EpisodeView:
    """Test session ``index`` of NetLLM and BBA (same trace), for the figure."""
    i = world.sizes[0] + index
    traces = world.evaluation
    start = int(traces.start_s[i])
    thr = np.roll(traces.mbps[i], -start)
    pick = lambda f: {k: getattr(episodes[k], f)[i] for k in keys}  # noqa: E731
    return EpisodeView(
        thr,
        pick("time_s"),
        pick("bitrate_mbps"),
        pick("buffer_s"),
        pick("rebuffer_s"),
        {k: float(episodes[k].qoe_per_chunk[i]) for k in keys},
    )


def return_sweep(p: Knobs, world: World, model, target: float, norm) -> dict[float, float]:
    """Test QoE of NetLLM against the target-return scale (one seed; display only, nothing is chosen)."""
    test = world.evaluation.take(np.arange(world.sizes[0], world.sizes[0] + world.sizes[1]))
    out = {}
    for scale in SWEEP_SCALES:
        agent = NetLLMAgent(model, p.window, target * scale / p.target_return_scale, *norm, p.return_scale)
        out[scale] = float(abr.rollout(agent, world.video, test).qoe_per_chunk.mean())
    return out


def per_seed(outcomes: list[SeedOutcome], key: str, split: str) -> list[float]:
    """Mean QoE per chunk over the split's traces, one number per seed (``key="best"``: each seed's best rule)."""
    return [float(o.scores[o.best_rule if key == "best" else key].split(split).mean()) for o in outcomes]


def make_claims(p: Knobs, outcomes: list[SeedOutcome]) -> list[ClaimCheck]:
    net = lambda split: per_seed(outcomes, NETLLM.key, split)  # noqa: E731
    claims = [
        beats_rules_claim(net("test"), per_seed(outcomes, "best", "test")),
        generalises_claim(net("unseen"), per_seed(outcomes, "best", "unseen")),
        pool_claim(net("test"), per_seed(outcomes, POOL.key, "test")),
        rate_claim(net("test"), per_seed(outcomes, RATE.key, "test")),
        scratch_claim(net("unseen"), per_seed(outcomes, SCRATCH.key, "unseen")),
    ]
    if p.no_pretrain:
        claims.append(pretraining_claim(net("unseen"), per_seed(outcomes, NO_PRETRAIN.key, "unseen")))
    return claims


def final_metrics(p: Knobs, outcomes: list[SeedOutcome]) -> dict[str, float]:
    keys = [a.key for a in (*RULES, POOL, *learned_arms(p))]
    out = {f"qoe_{s}_{k}": float(np.mean(per_seed(outcomes, k, s))) for k in keys for s in SPLITS}
    for s in ("test", "unseen"):
        out[f"qoe_{s}_best_rule"] = float(np.mean(per_seed(outcomes, "best", s)))
        out[f"gap_{s}_netllm_minus_best_rule"] = out[f"qoe_{s}_netllm"] - out[f"qoe_{s}_best_rule"]
    for a in learned_arms(p):
        out[f"trainable_{a.key}"] = float(outcomes[0].trainable[a.key])
    out["total_params_netllm"] = float(outcomes[0].total_params[NETLLM.key])
    out["forwards_per_chunk_netllm"] = float(np.mean([o.forwards_per_chunk[NETLLM.key] for o in outcomes]))
    if p.token_answer:
        out["forwards_per_chunk_token_answer"] = float(np.mean([o.forwards_per_chunk[TOKEN.key] for o in outcomes]))
        out["invalid_rate_token_answer"] = float(np.mean([o.invalid_rate for o in outcomes]))
    out["pool_steps"] = float(outcomes[0].pool_size)
    return out


@method_run(Knobs, figures=make_figures)
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    backbone, config = load_backbone(p.backbone, ctx.show_progress)
    per_arm = {a.key: (p.scratch_steps if a is SCRATCH else p.train_steps) for a in learned_arms(p)}
    bar = ctx.bar(len(seeds) * sum(per_arm.values()), f"NetLLM and baselines, {len(seeds)} seeds")
    outcomes, first = [], None
    for seed in seeds:
        outcome, extras = run_seed(ctx, seed, backbone, config, bar)
        outcomes.append(outcome)
        first = first or extras
    bar.close()
    view = episode_view(first["world"], first["episodes"])
    result_extras = {"outcomes": outcomes, "episode": view, "seeds": seeds, "arms": learned_arms(p)}
    if p.return_sweep:
        sweep = return_sweep(p, first["world"], first["models"][NETLLM.key], first["target"], first["norm"])
        result_extras["return_sweep"] = sweep
    return Outcome(metrics=final_metrics(p, outcomes), claims=make_claims(p, outcomes), extras=result_extras)

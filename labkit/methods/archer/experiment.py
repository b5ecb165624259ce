"""ArCHer's experiment: typed knobs, the "guess my number" dialogue, the baselines, the claims, run().

Every arm starts from the same behaviour-cloned GRU policy (random well-formed dialogues) on each seed and plays the
same number of games: ArCHer (:mod:`.method`), trajectory-level REINFORCE with a mean-return baseline (the
single-turn on-policy policy gradient the card names for the toy) and online filtered BC (fine-tune on the top
``top_p`` of all games played so far). An evaluation on fresh secrets every ``eval_every`` iterations gives the
learning curves (return and success rate against the games played). The evaluation samples utterances at
temperature 1 (the policy the gradient optimises), with the same random numbers for every arm of a seed.

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, params_of
from labkit.core.training import check_finite, check_weights
from labkit.models.tiny_lm import TinyGRULM
from labkit.substrates import dialogue as dlg

from .figures import make_figures
from .method import ArcherConfig, UtteranceCritic, train_archer


@dataclass(frozen=True)
class Knobs:
    iterations: int = knob(12, standard=150, full=400, low=1, high=100_000, help="iterations (one game per env each)")
    critic_steps: int = knob(10, low=1, high=1000, help="critic TD steps per iteration")
    gamma: float = knob(0.95, low=0.0, high=1.0, help="discount γ of the utterance-level critic")
    tau: float = knob(0.1, low=1e-4, high=1.0, log=True, help="Polyak rate τ of the target critic")
    warmup: int = knob(3, standard=5, full=20, low=0, high=10_000, help="iterations that update only the critic")
    capacity: int = knob(3000, low=64, high=1_000_000, log=True, help="replay buffer capacity (utterances)")
    n_envs: int = knob(32, low=2, high=4096, main=False, help="parallel games per iteration")
    n_secrets: int = knob(16, standard=16, full=64, low=2, high=256, main=False, help="secrets 1 … N")
    max_turns: int = knob(8, standard=8, full=10, low=1, high=30, main=False, help="turns before truncation")
    actor_steps: int = knob(3, low=1, high=1000, main=False, help="policy-gradient steps per iteration (ArCHer)")
    batch: int = knob(32, low=2, high=4096, main=False, help="critic/actor minibatch (utterances)")
    critic_lr: float = knob(1e-3, low=1e-6, high=1e-1, log=True, main=False, help="Adam lr of the critic")
    actor_lr: float = knob(3e-4, low=1e-6, high=1e-1, log=True, main=False, help="Adam lr of every policy")
    bc_steps: int = knob(100, standard=200, low=0, high=100_000, main=False, help="behaviour-cloning warm-start steps")
    top_p: float = knob(0.1, low=0.01, high=1.0, main=False, help="filtered BC keeps this share of all games")
    n_seeds: int = knob(3, standard=5, full=10, low=1, high=100, main=False, help="seeds (all arms per seed)")
    eval_every: int = knob(
        4, standard=5, full=10, low=1, high=10_000, main=False, help="evaluation every this many iterations"
    )
    eval_games: int = knob(
        128, standard=256, full=1024, low=8, high=10_000, main=False, help="fresh secrets per evaluation"
    )

    def __post_init__(self):
        if self.warmup >= self.iterations:
            raise ValueError(f"warmup={self.warmup} must be below iterations={self.iterations}: the actor never trains")
        if self.eval_every > self.iterations:
            raise ValueError(f"eval_every={self.eval_every} must be at most iterations={self.iterations}")


PARAMS = params_of(Knobs)
MAIN_METRIC = "eval_return"

ARMS = (Arm("archer", "ArCHer"), Arm("reinforce", "REINFORCE (trajectory)"), Arm("filtered_bc", "filtered BC"))
#: card margins, fixed before any run: ArCHer's area under the return curve beats REINFORCE's by ≥ 0.5 turns,
#: and its final return reaches −6 (random play ≈ −8)
AUC_MARGIN = 0.5
FINAL_RETURN_TARGET = -6.0
DECIMALS = 1
BC_LR, BC_BATCH, BC_GAMES = 3e-3, 64, 512


# --- typed records ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One arm on one seed: evaluation points against games played."""

    episodes: tuple[int, ...]
    returns: tuple[float, ...]
    success: tuple[float, ...]

    @property
    def auc(self) -> float:
        """Mean evaluation return over the whole budget (area under the learning curve / its length)."""
        return float(np.mean(self.returns))

    @property
    def final(self) -> float:
        return self.returns[-1]


@dataclass(frozen=True)
class ArmResult:
    arm: Arm
    curves: tuple[Curve, ...]  # one per seed


@dataclass(frozen=True)
class Example:
    """A sampled dialogue of the trained ArCHer policy (first seed) with the critic's values along it."""

    secret: int
    lines: tuple[str, ...]
    v: tuple[float, ...]  # min_k V(s_t) before each turn
    q: tuple[float, ...]  # min_k Q(s_t, a_t) of the utterance spoken
    adv_grid: tuple[tuple[float, ...], ...]  # A(s_0, (op, n)) for op ∈ {<, =} (rows) and n = 1 … N (columns)
    before: tuple[str, ...]  # the same secret played by the warm-started policy

    @property
    def midpoint_corr(self) -> float:
        """Correlation of A(s_0, "< n") with −|n − (N/2 + 1)|: near 1 when the critic prefers the halving question."""
        adv = np.asarray(self.adv_grid[0])
        n = np.arange(1, len(adv) + 1)
        closeness = -np.abs(n - (len(adv) / 2 + 1))
        return float(np.corrcoef(adv, closeness)[0, 1])


# --- the claims ---------------------------------------------------------------------------------------------


def _detail(values) -> str:
    return "" if np.isfinite(np.asarray(values, float)).all() else "a value is not finite: the verdict is inconclusive"


def sample_efficiency_claim(auc_archer, auc_reinforce, margin: float = AUC_MARGIN) -> ClaimCheck:
    """Headline (toy form of "ArCHer is far more sample-efficient than on-policy methods"): the mean evaluation return
    over the whole budget (area under the curve) of ArCHer exceeds trajectory-level REINFORCE's by ≥ margin."""
    return ClaimCheck.paired(
        "ArCHer learns faster than on-policy trajectory-level PG at the same number of games",
        "mean return over the budget (area under the learning curve), ArCHer − REINFORCE, per seed",
        auc_archer,
        auc_reinforce,
        labels=("ArCHer", "REINFORCE"),
        margin=margin,
        headline=True,
        detail=_detail(list(auc_archer) + list(auc_reinforce)),
        decimals=DECIMALS,
    )


def final_return_claim(final_archer, target: float = FINAL_RETURN_TARGET) -> ClaimCheck:
    """ArCHer ends well above random play (≈ −8): its final return is at least ``target``."""
    return ClaimCheck(
        claim=f"ArCHer's final return reaches {target:g} (random play ≈ −8)",
        quantity="return on fresh secrets at the end, ArCHer, per seed",
        values=final_archer,
        margin=target,
        detail=_detail(final_archer),
        decimals=DECIMALS,
    )


def filtered_bc_claim(auc_archer, auc_bc) -> ClaimCheck:
    """ArCHer also beats online filtered BC on the area under the curve (margin 0, the paper's "beats")."""
    return ClaimCheck.paired(
        "ArCHer learns faster than online filtered BC at the same number of games",
        "mean return over the budget, ArCHer − filtered BC, per seed",
        auc_archer,
        auc_bc,
        labels=("ArCHer", "filtered BC"),
        margin=0.0,
        detail=_detail(list(auc_archer) + list(auc_bc)),
        decimals=DECIMALS,
    )


# --- the warm start and the baselines -----------------------------------------------------------------------


def warm_start(p: Knobs, seed: int) -> TinyGRULM:
    """The card's GRU policy (embedding 32, hidden 64), behaviour-cloned on random well-formed dialogues."""
    torch.manual_seed(seed)
    policy = TinyGRULM(dlg.vocab_size(p.n_secrets), d_embed=32, d_model=64)
    gen = torch.Generator().manual_seed(seed)
    states, actions = dlg.random_dialogues(BC_GAMES, p.n_secrets, p.max_turns, gen)
    dlg.behaviour_clone(policy, states, actions, p.bc_steps, BC_LR, BC_BATCH, gen)
    return policy


def reinforce_loss(returns, logp_games):
    """Trajectory-level REINFORCE with a mean-return baseline. ``returns, logp_games (B,)``; logp is Σ over every
    token of every utterance of a game: L = −E[(G − mean G) · Σ_t Σ_l log π(a_t^l | s_t, a_t^{<l})]."""
    return -((returns - returns.mean()).detach() * logp_games).mean()


def train_reinforce(policy, env, p: Knobs, *, seed: int, monitor) -> None:
    """One on-policy step per iteration on the iteration's games (the single-turn PG of the card)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=p.actor_lr)
    for it in range(p.iterations):
        played = dlg.rollout(policy, env, seed=seed * 100_003 + it, generator=gen)
        t = played.transitions
        logp = dlg.utterance_logprobs(policy, t.states, t.actions)
        logp_games = torch.zeros(env.n_envs).index_add(0, t.episode, logp)
        loss = reinforce_loss(played.returns, logp_games)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        monitor(it, (it + 1) * env.n_envs, {"actor": loss}, {"policy": policy}, played)


def train_filtered_bc(policy, env, p: Knobs, *, seed: int, monitor) -> None:
    """Online filtered BC: keep every game so far, fine-tune with −log π(a|s) on the top ``top_p`` by return."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=p.actor_lr)
    games: list[tuple[float, torch.Tensor, torch.Tensor]] = []
    for it in range(p.iterations):
        played = dlg.rollout(policy, env, seed=seed * 100_003 + it, generator=gen)
        t = played.transitions
        for g in range(env.n_envs):
            rows = t.episode == g
            games.append((float(played.returns[g]), t.states[rows], t.actions[rows]))
        keep = sorted(range(len(games)), key=lambda i: -games[i][0])[: max(1, int(p.top_p * len(games)))]
        states = torch.cat([games[i][1] for i in keep])
        actions = torch.cat([games[i][2] for i in keep])
        loss = torch.tensor(0.0)
        for _ in range(p.actor_steps):
            idx = torch.randint(0, len(states), (min(p.batch, len(states)),), generator=gen)
            loss = -dlg.utterance_logprobs(policy, states[idx], actions[idx]).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
        monitor(it, (it + 1) * env.n_envs, {"actor": loss}, {"policy": policy}, played)


def archer_config(p: Knobs, **changes) -> ArcherConfig:
    cfg = ArcherConfig(
        iterations=p.iterations,
        critic_steps=p.critic_steps,
        actor_steps=p.actor_steps,
        warmup=p.warmup,
        batch=p.batch,
        gamma=p.gamma,
        tau=p.tau,
        critic_lr=p.critic_lr,
        actor_lr=p.actor_lr,
        capacity=p.capacity,
    )
    return ArcherConfig(**{**cfg.__dict__, **changes})


def divergence_monitor(label: str, every: int, on_eval=None, check=check_finite, weights=check_weights):
    """A loop monitor that checks every loss each iteration and the weights every ``every`` iterations (and at the
    last call), naming the arm and the series; ``on_eval(it, episodes, modules)`` runs at those iterations too."""

    def monitor(it, episodes, losses, modules, played):
        for name, loss in losses.items():
            check(loss, it, f"{label} {name} loss")
        if (it + 1) % every == 0:
            for name, module in modules.items():
                weights(module, it, f"{label} {name} weights")
            if on_eval is not None:
                on_eval(it, episodes, modules)

    return monitor


# --- the example dialogue and the critic along it ------------------------------------------------------------


@torch.no_grad()
def example_dialogue(policy, before, critic: UtteranceCritic, p: Knobs, secret: int) -> Example:
    env = dlg.GuessMyNumber(1, p.n_secrets, p.max_turns)
    obs, _ = env.reset(secrets=torch.tensor([secret]))
    v, q = [], []
    gen = torch.Generator().manual_seed(secret)
    for _ in range(p.max_turns):
        a = dlg.sample_utterances(policy, obs, gen)
        v.append(float(critic.v(obs).min(-1).values))
        q.append(float(critic.q(obs, a).min(-1).values))
        obs, *_ = env.step(a)
        if bool(env.done.all()):
            break
    lines = dlg.render(obs[0])
    s0, _ = env.reset(secrets=torch.tensor([secret]))
    n = torch.arange(1, p.n_secrets + 1)
    grid = []
    for op in (dlg.LT, dlg.EQ):
        a = torch.stack([torch.full_like(n, op), dlg.number_token(n)], 1)
        adv = critic.q(s0.expand(len(n), -1), a).min(-1).values - critic.v(s0).min(-1).values
        grid.append(tuple(adv.tolist()))
    benv = dlg.GuessMyNumber(1, p.n_secrets, p.max_turns)
    bobs, _ = benv.reset(secrets=torch.tensor([secret]))
    gen = torch.Generator().manual_seed(secret)
    for _ in range(p.max_turns):
        bobs, *_ = benv.step(dlg.sample_utterances(before, bobs, gen))
        if bool(benv.done.all()):
            break
    return Example(secret, tuple(lines), tuple(v), tuple(q), tuple(grid), tuple(dlg.render(bobs[0])))


# --- the experiment ------------------------------------------------------------------------------------------


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    env = dlg.GuessMyNumber(p.n_envs, p.n_secrets, p.max_turns)
    bar = ctx.bar(len(seeds) * len(ARMS) * p.iterations, f"ArCHer + 2 baselines × {len(seeds)} seeds")
    curves = {arm.key: [] for arm in ARMS}
    example = None
    start_returns = []
    for seed in seeds:
        base = warm_start(p, seed)
        r0, s0 = dlg.evaluate(base, p.n_secrets, p.max_turns, p.eval_games, seed=10_000 + seed)
        start_returns.append(r0)
        for arm in ARMS:
            policy = copy.deepcopy(base)
            points = [(0, r0, s0)]
            last_losses: dict = {}

            def on_eval(
                it, episodes, modules, arm=arm, policy=policy, seed=seed, points=points, last_losses=last_losses
            ):
                r, s = dlg.evaluate(policy, p.n_secrets, p.max_turns, p.eval_games, seed=10_000 + seed)
                points.append((episodes, r, s))
                if "q" in last_losses:
                    ctx.history.log(episodes, arm.label, "critic_td_loss", float(last_losses["q"].detach()), seed=seed)
                ctx.history.log(episodes, arm.label, "eval_return", r, seed=seed)
                ctx.history.log(episodes, arm.label, "success_rate", s, seed=seed)

            ctx.history.log(0, arm.label, "eval_return", r0, seed=seed)
            ctx.history.log(0, arm.label, "success_rate", s0, seed=seed)
            watch = divergence_monitor(arm.label, p.eval_every, on_eval, ctx.check, ctx.check_weights)

            def monitor(it, episodes, losses, modules, played, watch=watch, last_losses=last_losses):
                last_losses.update(losses)
                watch(it, episodes, losses, modules, played)
                bar.update(1)

            if arm.key == "archer":
                critic = train_archer(policy, env, archer_config(p), seed=seed, monitor=monitor)
                ctx.check_weights(critic, p.iterations, f"{arm.label} critic weights")
                if example is None:
                    example = example_dialogue(policy, base, critic, p, secret=(seed % p.n_secrets) + 1)
            elif arm.key == "reinforce":
                train_reinforce(policy, env, p, seed=seed, monitor=monitor)
            else:
                train_filtered_bc(policy, env, p, seed=seed, monitor=monitor)
            ctx.check_weights(policy, p.iterations, f"{arm.label} policy weights")
            ep, r, s = zip(*points)
            curves[arm.key].append(Curve(ep, r, s))
    bar.close()
    arms = [ArmResult(arm, tuple(curves[arm.key])) for arm in ARMS]
    auc = {a.arm.key: [c.auc for c in a.curves] for a in arms}
    final = {a.arm.key: [c.final for c in a.curves] for a in arms}
    success = {a.arm.key: [c.success[-1] for c in a.curves] for a in arms}
    claims = [
        sample_efficiency_claim(auc["archer"], auc["reinforce"]),
        final_return_claim(final["archer"]),
        filtered_bc_claim(auc["archer"], auc["filtered_bc"]),
    ]
    metrics = {"start_return": float(np.mean(start_returns)), "optimal_return": dlg.optimal_return(p.n_secrets)}
    for key in auc:
        metrics[f"auc_{key}"] = float(np.mean(auc[key]))
        metrics[f"final_return_{key}"] = float(np.mean(final[key]))
        metrics[f"final_success_{key}"] = float(np.mean(success[key]))
    if example is not None:
        metrics["advantage_midpoint_corr"] = example.midpoint_corr
    extras = {"arms": arms, "example": example, "seeds": list(seeds), "episodes_per_iteration": p.n_envs}
    return Outcome(metrics=metrics, claims=claims, extras=extras)

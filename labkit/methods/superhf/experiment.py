"""SuperHF's experiment: the typed knobs, the topic toy, the PPO baseline, the claims and ``run``.

The toy is the card's topic task (:mod:`labkit.data.language`): one topic token per prompt, 8-token responses, a proxy
reward that pays for "!" (the exploit) and a gold reward that penalises repeats. Arms, all from the same SFT model π_0
and at the same number of SAMPLED completions per iteration: SuperHF(β_KL = 0), SuperHF(β_KL), PPO (sequence-level
clipped surrogate on R − c·KL, running-mean baseline, :mod:`labkit.substrates.rlhf`) and, for reference, best-of-S
sampling from π_0 (no training). Reward hacking is measured by cross-prompt METEOR and the share of "!" tokens.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, params_of
from labkit.data import language as lang
from labkit.models import tiny_lm as lm
from labkit.substrates.rlhf import best_of_n, clipped_surrogate_loss, collect_rollout

from .figures import make_figures
from .method import LENGTH, cross_prompt_meteor, superhf_iteration


@dataclass(frozen=True)
class Knobs:
    beta_kl: float = knob(
        0.35,
        low=0.0,
        high=10.0,
        help="SuperHF's KL-prior weight β_KL on KL(π_0‖π_θ) (the β_KL = 0 arm is always trained too)",
    )
    superbatch: int = knob(16, low=2, high=256, help="S: completions sampled per prompt per iteration")
    top_k: int = knob(1, low=1, high=256, help="K: completions kept per prompt (by the proxy reward)")
    prompts_per_group: int = knob(
        2, low=1, high=64, help="prompts per iteration (the code's prompt_accumulation_steps)"
    )
    ppo_kl_coef: float = knob(
        0.05, low=0.0, high=10.0, help="PPO's KL coefficient c in the reward R − c·(log π − log π_0)"
    )
    n_iters: int = knob(
        40,
        200,
        400,
        low=1,
        high=100_000,
        help="iterations; each samples prompts_per_group × superbatch completions per method",
    )
    lr: float = knob(
        1e-3,
        low=1e-6,
        high=1.0,
        log=True,
        main=False,
        help="Adam learning rate of both methods (toy scale; the paper's LoRA lr is 2e-5)",
    )
    sft_epochs: int = knob(
        4,
        low=1,
        high=100,
        main=False,
        help="SuperHF gradient steps on each iteration's kept completions (the code does one pass)",
    )
    ppo_epochs: int = knob(4, low=1, high=100, main=False, help="PPO gradient steps per rollout")
    clip_eps: float = knob(0.2, low=0.01, high=10.0, main=False, help="PPO ratio clip ε")
    top_p: float = knob(
        0.95,
        low=0.05,
        high=1.0,
        main=False,
        help="SuperHF's nucleus for sampling (PPO samples at top-p 1 so its ratios are on-policy)",
    )
    sft_steps: int = knob(300, low=0, high=100_000, main=False, help="SFT steps that make π_0")
    sft_lr: float = knob(3e-3, low=1e-6, high=1.0, log=True, main=False, help="SFT learning rate")
    eval_per_topic: int = knob(
        16, 32, 64, low=2, high=10_000, main=False, help="completions per topic sampled (T = 1) for every evaluation"
    )
    eval_every: int = knob(
        5,
        10,
        20,
        low=1,
        high=100_000,
        main=False,
        help="evaluate every this many iterations (and at the start and end)",
    )
    meteor_pairs: int = knob(
        200, low=1, high=100_000, main=False, help="cross-prompt completion pairs per METEOR estimate (the paper: 200)"
    )
    sweep: bool = knob(
        False, True, True, main=False, help="also train SuperHF with β_KL ∈ {0.1, 1} and PPO with c ∈ {0.01, 0.2}"
    )
    n_seeds: int = knob(
        3,
        3,
        5,
        low=1,
        high=100,
        main=False,
        help="seeds seed, seed+1, …: each draws its own SFT data, π_0 and samples (the claims' interval)",
    )


PARAMS = params_of(Knobs)
MAIN_METRIC = "gold_reward"

SWEEP_BETAS = (0.1, 1.0)
SWEEP_PPO = (0.01, 0.2)
#: π_0's SFT: examples drawn from the topic task and the batch size
SFT_EXAMPLES, SFT_BATCH = 4096, 64
#: per-seed generator seeds: SEED_STRIDE·seed for π_0's evaluation, SEED_STRIDE·seed + ARM_SALT·arm + 1 per arm
SEED_STRIDE, ARM_SALT = 10_000, 97
#: PPO's running-mean baseline momentum and its gradient-norm clip
BASELINE_MOMENTUM, PPO_GRAD_CLIP = 0.9, 1.0


@dataclass(frozen=True)
class Plan:
    """One trained arm: ``kind`` is "superhf" or "ppo"; ``coef`` is β_KL or PPO's c."""

    arm: Arm
    kind: str
    coef: float


@dataclass
class Scores:
    """One evaluation of a policy on fresh samples (T = 1)."""

    proxy_reward: float
    gold_reward: float
    kl_from_init: float
    bang_frac: float
    meteor: float
    distinct_2: float


METRICS = tuple(Scores.__dataclass_fields__)


@dataclass
class ArmOutcome:
    """An arm's final evaluation per seed, and one sampled completion per topic for the first seed."""

    arm: Arm
    per_seed: list[Scores] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return [getattr(s, metric) for s in self.per_seed]

    def mean(self, metric: str) -> float:
        return float(np.mean(self.values(metric)))


def shf_arm(beta: float) -> Arm:
    return Arm(f"superhf_{beta:g}", f"SuperHF β_KL={beta:g}")


def ppo_arm(coef: float) -> Arm:
    return Arm(f"ppo_{coef:g}", f"PPO c={coef:g}")


INIT = Arm("init", "π_0")


def best_of_arm(n: int) -> Arm:
    return Arm("best_of", f"best-of-{n} (π_0)")


def arm_plan(beta_kl: float, ppo_kl_coef: float, sweep: bool) -> list[Plan]:
    """SuperHF for β_KL = 0 and ``beta_kl`` (and the sweep), then PPO for ``ppo_kl_coef`` (and the sweep)."""
    betas = sorted({0.0, beta_kl, *(SWEEP_BETAS if sweep else ())})
    ppos = sorted({ppo_kl_coef, *(SWEEP_PPO if sweep else ())})
    return [Plan(shf_arm(b), "superhf", b) for b in betas] + [Plan(ppo_arm(c), "ppo", c) for c in ppos]


# --- the PPO baseline -----------------------------------------------------------------------------------------


def ppo_iteration(
    policy,
    ref,
    opt,
    prompts,
    reward_fn,
    kl_coef: float,
    baseline: float | None,
    epochs: int = 4,
    clip_eps: float = 0.2,
    momentum: float = BASELINE_MOMENTUM,
    length: int = LENGTH,
    generator=None,
) -> dict:
    """Sequence-level PPO on one rollout of the (already repeated) ``prompts``: R̃ = R − c·(log π_old − log π_0),
    A = R̃ − b with b a running mean of R̃ (b ← m·b + (1 − m)·mean R̃ after the step; the first batch's mean
    to start), then ``epochs`` steps on mean clipped surrogate with gradients clipped at norm 1."""
    ro = collect_rollout(policy, ref, prompts, length, reward_fn, kl_coef, generator)
    mean_r = float(ro.shaped_reward.mean())
    b = mean_r if baseline is None else baseline
    adv = ro.shaped_reward - b
    policy.train()
    for _ in range(epochs):
        logps = lm.sequence_logprobs(policy, ro.prompts, ro.responses)
        loss = clipped_surrogate_loss(logps, ro.old_logps, adv, clip_eps).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), PPO_GRAD_CLIP)
        opt.step()
    return {"loss": loss.detach(), "baseline": momentum * b + (1 - momentum) * mean_r, "reward": ro.reward}


# --- evaluation --------------------------------------------------------------------------------------------------


def decode(task: lang.TopicTask, prompt: int, tokens) -> str:
    """Words as ``w<i>``, relevant ones to the prompt's topic in capitals (``W<i>``), "!" as is."""
    rel = set(task.relevant()[prompt - task.n_words - 1].tolist())
    return " ".join("!" if t == task.bang else (f"W{t}" if t in rel else f"w{t}") for t in tokens)


def eval_prompts(task: lang.TopicTask, per_topic: int, device) -> torch.Tensor:
    """Every topic ``per_topic`` times, ``(n_topics·per_topic, 1)``."""
    return task.topic_token(torch.arange(task.n_topics).repeat_interleave(per_topic)).unsqueeze(1).to(device)


def _cpu_gen(generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator, device=generator.device)))


def score_responses(task, prompts, responses, kl_from_init: float, n_pairs: int, generator) -> Scores:
    """Proxy and gold reward, share of "!" tokens, cross-prompt METEOR and distinct-2 of a set of completions."""
    return Scores(
        proxy_reward=float(lang.topic_proxy_reward(task, prompts, responses).mean()),
        gold_reward=float(lang.topic_gold_reward(task, prompts, responses).mean()),
        kl_from_init=kl_from_init,
        bang_frac=float((responses == task.bang).float().mean()),
        meteor=cross_prompt_meteor(prompts, responses, n_pairs, generator),
        distinct_2=lang.distinct_n(responses.cpu(), 2),
    )


def evaluate(task, policy, ref, prompts, n_pairs: int, generator) -> tuple[Scores, torch.Tensor]:
    """One completion per prompt from π_θ at T = 1, scored; KL(π_θ‖π_0) = mean log π_θ(y|x) − log π_0(y|x) on
    those samples (nats per sequence, k1)."""
    ys = lm.sample(policy, prompts, LENGTH, 1.0, generator)
    # draw the METEOR pairs' generator first (as before the records), then the KL on the samples
    pair_gen = _cpu_gen(generator)
    kl = float(lm.kl_on_samples(policy, ref, prompts, ys))
    return score_responses(task, prompts, ys, kl, n_pairs, pair_gen), ys


def make_init(task, seed: int, device, *, sft_steps: int, sft_lr: float):
    """π_0: a TinyGRULM after ``sft_steps`` AdamW steps on :func:`labkit.data.language.topic_sft_data`."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = lm.TinyGRULM(task.vocab_size).to(device)
    x, y = lang.topic_sft_data(task, SFT_EXAMPLES, LENGTH, gen)
    lm.train_nll(
        model,
        x.to(device),
        y.to(device),
        sft_steps,
        lr=sft_lr,
        batch_size=SFT_BATCH,
        generator=gen,
        series=f"SFT π_0 seed {seed}",
    )
    return model


def train_arm(ctx: RunContext, task, init, plan: Plan, seed: int, bar, eval_x, arm_index: int):
    """Train one arm from a copy of π_0 for ``n_iters`` iterations, evaluating at step = completions sampled."""
    p, dev = ctx.p, ctx.device
    ref = lm.frozen_copy(init)
    policy = copy.deepcopy(init).train()
    opt = torch.optim.Adam(policy.parameters(), lr=p.lr)
    gen = torch.Generator(device=dev).manual_seed(SEED_STRIDE * seed + ARM_SALT * arm_index + 1)

    def reward_fn(x, y):
        return lang.topic_proxy_reward(task, x, y)

    per_iter = p.prompts_per_group * p.superbatch
    baseline = None
    for it in range(p.n_iters + 1):
        if it % p.eval_every == 0 or it == p.n_iters:
            scores, ys = evaluate(task, policy, ref, eval_x, p.meteor_pairs, gen)
            ctx.history.log_many(it * per_iter, plan.arm.label, asdict(scores), seed=seed)
        if it == p.n_iters:
            return scores, ys
        prompts = lang.topic_prompts(task, p.prompts_per_group, _cpu_gen(gen)).to(dev)
        if plan.kind == "superhf":
            out = superhf_iteration(
                policy,
                ref,
                opt,
                prompts,
                reward_fn,
                plan.coef,
                p.superbatch,
                p.top_k,
                p.sft_epochs,
                p.top_p,
                generator=gen,
            )
        else:
            out = ppo_iteration(
                policy,
                ref,
                opt,
                prompts.repeat_interleave(p.superbatch, 0),
                reward_fn,
                plan.coef,
                baseline,
                p.ppo_epochs,
                p.clip_eps,
                generator=gen,
            )
            baseline = out["baseline"]
        ctx.check(out["loss"], it, plan.arm.label)
        ctx.check_weights(policy, it, plan.arm.label)
        bar.update(1)


def best_of_init(task, init, eval_x, n: int, n_pairs: int, gen) -> tuple[Scores, torch.Tensor]:
    """Best-of-n from π_0 (no training): n samples per eval prompt, keep the highest proxy reward."""
    rep = eval_x.repeat_interleave(n, 0)
    ys = lm.sample(init, rep, LENGTH, 1.0, gen)
    scores = lang.topic_proxy_reward(task, rep, ys).view(-1, n)
    best, _, _ = best_of_n(ys.view(-1, n, LENGTH), scores, n)
    # KL of best-of-n from π_0: the analytic bound log n − (n − 1)/n (ties make it smaller)
    kl = math.log(n) - (n - 1) / n
    return score_responses(task, eval_x, best, kl, n_pairs, _cpu_gen(gen)), best


# --- the claims ---------------------------------------------------------------------------------------------------

#: decimals of the claims' printed numbers. Measured at the quick preset over ATEN_CPU_CAPABILITY default / avx2 /
#: avx512 and 1-2 threads (benchmarks/spread/superhf.json): every sampled completion, reward and METEOR is identical
#: (only the KL estimates move, by 3e-7), so the spread allows more; rewards print at 1 decimal and METEOR at 2 because
#: the seed-to-seed noise (interval half-widths of ~1 reward point and ~0.4 METEOR) makes further digits meaningless
REWARD_DECIMALS, METEOR_DECIMALS = 1, 2


def beats_ppo_claim(shf, ppo, decimals: int = REWARD_DECIMALS) -> ClaimCheck:
    """Headline (the abstract): SuperHF exceeds PPO-based RLHF on the training objective, the reward-model score.
    Per seed: final proxy reward of SuperHF(β_KL) minus PPO's, at the same number of sampled completions; margin 0."""
    return ClaimCheck.paired(
        claim="SuperHF reaches a higher reward-model (proxy) score than PPO at the same number of sampled completions",
        quantity="final proxy reward, SuperHF(β_KL) − PPO",
        method=shf,
        baseline=ppo,
        margin=0.0,
        headline=True,
        labels=("SuperHF", "PPO"),
        detail="a diverged arm makes this inconclusive",
        decimals=decimals,
    )


def improves_claim(shf, init, decimals: int = REWARD_DECIMALS) -> ClaimCheck:
    """Supporting: SuperHF raises the reward it is trained on above the initial model's; margin 0."""
    return ClaimCheck.paired(
        claim="SuperHF raises the proxy reward above the initial model π_0",
        quantity="final proxy reward, SuperHF(β_KL) − π_0",
        method=shf,
        baseline=init,
        margin=0.0,
        labels=("SuperHF", "π_0"),
        decimals=decimals,
    )


def meteor_claim(meteor_kl, meteor_nokl, decimals: int = METEOR_DECIMALS) -> ClaimCheck:
    """Supporting (the paper's reward-hacking measure): with the KL prior, completions to different prompts are
    less alike, i.e. lower cross-prompt METEOR than SuperHF without it. Per seed: METEOR(β_KL) − METEOR(0) ≤ 0."""
    return ClaimCheck.paired(
        claim="the KL prior lowers reward hacking: cross-prompt METEOR of SuperHF(β_KL) is below SuperHF(β_KL=0)'s",
        quantity="final cross-prompt METEOR, SuperHF(β_KL) − SuperHF(β_KL=0)",
        method=meteor_kl,
        baseline=meteor_nokl,
        margin=0.0,
        higher_is_better=False,
        labels=("with prior", "without"),
        decimals=decimals,
    )


def gold_claim(gold_kl, gold_nokl, decimals: int = REWARD_DECIMALS) -> ClaimCheck:
    """Supporting (the toy's measure of hacking): with the KL prior the gold reward ends higher. Per seed:
    gold(β_KL) − gold(0) ≥ 0."""
    return ClaimCheck.paired(
        claim="the KL prior keeps the gold reward higher than SuperHF without it",
        quantity="final gold reward, SuperHF(β_KL) − SuperHF(β_KL=0)",
        method=gold_kl,
        baseline=gold_nokl,
        margin=0.0,
        labels=("with prior", "without"),
        decimals=decimals,
    )


# --- the experiment -----------------------------------------------------------------------------------------------


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p, dev = ctx.p, ctx.device
    if p.top_k > p.superbatch:
        raise ValueError(f"top_k={p.top_k} must not exceed superbatch={p.superbatch}")
    task = lang.TopicTask()
    seeds = ctx.seeds(p.n_seeds)
    plans = arm_plan(p.beta_kl, p.ppo_kl_coef, p.sweep)
    bon = best_of_arm(p.superbatch)
    bar = ctx.bar(len(seeds) * len(plans) * p.n_iters, f"SuperHF vs PPO: {len(plans)} arms × {len(seeds)} seed(s)")
    outcomes = {a.key: ArmOutcome(a) for a in [INIT, bon] + [pl.arm for pl in plans]}
    for seed in seeds:
        init = make_init(task, seed, dev, sft_steps=p.sft_steps, sft_lr=p.sft_lr)
        eval_x = eval_prompts(task, p.eval_per_topic, dev)
        gen = torch.Generator(device=dev).manual_seed(SEED_STRIDE * seed)
        ref = lm.frozen_copy(init)
        results = {
            INIT.key: evaluate(task, init, ref, eval_x, p.meteor_pairs, gen),
            bon.key: best_of_init(task, init, eval_x, p.superbatch, p.meteor_pairs, gen),
        }
        for k, plan in enumerate(plans):
            results[plan.arm.key] = train_arm(ctx, task, init, plan, seed, bar, eval_x, k)
        for key, (scores, ys) in results.items():
            outcomes[key].per_seed.append(scores)
            if seed == seeds[0]:
                first = torch.arange(task.n_topics) * p.eval_per_topic
                outcomes[key].examples = [decode(task, int(eval_x[i, 0]), ys[i].tolist()) for i in first.tolist()]
    bar.close()
    kl_arm, nokl, ppo = (outcomes[a.key] for a in (shf_arm(p.beta_kl), shf_arm(0.0), ppo_arm(p.ppo_kl_coef)))
    claims = [
        beats_ppo_claim(kl_arm.values("proxy_reward"), ppo.values("proxy_reward")),
        improves_claim(kl_arm.values("proxy_reward"), outcomes[INIT.key].values("proxy_reward")),
        meteor_claim(kl_arm.values("meteor"), nokl.values("meteor")),
        gold_claim(kl_arm.values("gold_reward"), nokl.values("gold_reward")),
    ]
    metrics = {f"{m}[{o.arm.label}]": o.mean(m) for o in outcomes.values() for m in METRICS}
    metrics["gold_reward"] = kl_arm.mean("gold_reward")
    return Outcome(
        metrics=metrics,
        claims=claims,
        extras={
            "plans": plans,
            "outcomes": list(outcomes.values()),
            "superhf": kl_arm,
            "no_kl": nokl,
            "ppo": ppo,
            "best_of": outcomes[bon.key],
            "init": outcomes[INIT.key],
        },
    )

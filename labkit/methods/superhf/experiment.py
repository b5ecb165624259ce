"""SuperHF (arXiv 2310.16763): supervised iterative learning from human feedback, with a KL prior.

Each iteration takes a group of prompts, samples S completions per prompt from the CURRENT policy π_θ
(T = 1, top-p 0.95), keeps the top-K by the reward model R (K = 1: y* = argmax_s R(x, y_s)) and takes a
supervised step on the kept pairs with
    L(θ) = CE_θ(y* | x) + β_KL · KL_tok(π_0 ‖ π_θ),
    CE   = −(1/L) Σ_t log π_θ(y*_t | x, y*_<t)                                  (prompt tokens not scored)
    KL_tok = max(0, (1/L) Σ_t Σ_v π_0(v | x, y*_<t) [log π_0(v | ·) − log π_θ(v | ·)])
The sampling distribution improves as π_θ does (online best-of-S distillation); the prior keeps π_θ near π_0.

The toy is the card's topic task (:mod:`labkit.data.language`): one topic token per prompt, 8-token responses,
a proxy reward that pays for "!" (the exploit) and a gold reward that penalises repeats. Arms, all from the same
SFT model π_0 and at the same number of SAMPLED completions per iteration: SuperHF(β_KL = 0), SuperHF(β_KL),
PPO (sequence-level clipped surrogate on R − c·KL, running-mean baseline, :mod:`labkit.substrates.rlhf`) and, for
reference, best-of-S sampling from π_0 (no training). Reward hacking is measured by the mean METEOR similarity
between completions of DIFFERENT prompts (:func:`meteor`, exact matches only) and by the share of "!" tokens.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from labkit import viz
from labkit.core import ClaimCheck, Outcome, Param, RunContext, method_run
from labkit.data import language as lang
from labkit.models import tiny_lm as lm
from labkit.substrates.rlhf import best_of_n, clipped_surrogate_loss, collect_rollout

MAIN_METRIC = "gold_reward"
PARAMS = [
    Param(
        "beta_kl",
        float,
        quick=0.35,
        low=0.0,
        high=10.0,
        help="SuperHF's KL-prior weight β_KL on KL(π_0‖π_θ) (the β_KL = 0 arm is always trained too)",
    ),
    Param("superbatch", int, quick=16, low=2, high=256, help="S: completions sampled per prompt per iteration"),
    Param("top_k", int, quick=1, low=1, high=256, help="K: completions kept per prompt (by the proxy reward)"),
    Param(
        "prompts_per_group",
        int,
        quick=2,
        low=1,
        high=64,
        help="prompts per iteration (the code's prompt_accumulation_steps)",
    ),
    Param(
        "ppo_kl_coef",
        float,
        quick=0.05,
        low=0.0,
        high=10.0,
        help="PPO's KL coefficient c in the reward R − c·(log π − log π_0)",
    ),
    Param(
        "n_iters",
        int,
        quick=40,
        standard=200,
        full=400,
        low=1,
        high=100_000,
        help="iterations; each samples prompts_per_group × superbatch completions per method",
    ),
    Param(
        "lr",
        float,
        quick=1e-3,
        low=1e-6,
        high=1.0,
        log=True,
        main=False,
        help="Adam learning rate of both methods (toy scale; the paper's LoRA lr is 2e-5)",
    ),
    Param(
        "sft_epochs",
        int,
        quick=4,
        low=1,
        high=100,
        main=False,
        help="SuperHF gradient steps on each iteration's kept completions (the code does one pass)",
    ),
    Param("ppo_epochs", int, quick=4, low=1, high=100, main=False, help="PPO gradient steps per rollout"),
    Param("clip_eps", float, quick=0.2, low=0.01, high=10.0, main=False, help="PPO ratio clip ε"),
    Param(
        "top_p",
        float,
        quick=0.95,
        low=0.05,
        high=1.0,
        main=False,
        help="SuperHF's nucleus for sampling (PPO samples at top-p 1 so its ratios are on-policy)",
    ),
    Param("sft_steps", int, quick=300, low=0, high=100_000, main=False, help="SFT steps that make π_0"),
    Param("sft_lr", float, quick=3e-3, low=1e-6, high=1.0, log=True, main=False, help="SFT learning rate"),
    Param(
        "eval_per_topic",
        int,
        quick=16,
        standard=32,
        full=64,
        low=2,
        high=10_000,
        main=False,
        help="completions per topic sampled (T = 1) for every evaluation",
    ),
    Param(
        "eval_every",
        int,
        quick=5,
        standard=10,
        full=20,
        low=1,
        high=100_000,
        main=False,
        help="evaluate every this many iterations (and at the start and end)",
    ),
    Param(
        "meteor_pairs",
        int,
        quick=200,
        low=1,
        high=100_000,
        main=False,
        help="cross-prompt completion pairs per METEOR estimate (the paper: 200)",
    ),
    Param(
        "sweep",
        bool,
        quick=False,
        standard=True,
        full=True,
        main=False,
        help="also train SuperHF with β_KL ∈ {0.1, 1} and PPO with c ∈ {0.01, 0.2}",
    ),
    Param(
        "n_seeds",
        int,
        quick=2,
        standard=3,
        full=5,
        low=1,
        high=100,
        main=False,
        help="seeds seed, seed+1, …: each draws its own SFT data, π_0 and samples",
    ),
]

LENGTH = 8
SWEEP_BETAS = (0.1, 1.0)
SWEEP_PPO = (0.01, 0.2)
METRICS = ("proxy_reward", "gold_reward", "kl_from_init", "bang_frac", "meteor", "distinct_2")


# --- the SuperHF pieces ---------------------------------------------------------------------------------------


def filter_top_k(samples: torch.Tensor, scores: torch.Tensor, k: int):
    """Keep the k highest-scoring completions of each prompt (ties: the earlier sample first, as a stable sort).
    ``samples (G, S, L)``, ``scores (G, S)`` → kept ``(G·k, L)``, their scores ``(G·k,)``, indices ``(G, k)``."""
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"top_k must be in [1, {scores.shape[1]}] (the superbatch), got {k}")
    idx = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    kept = samples.gather(1, idx.unsqueeze(-1).expand(-1, -1, samples.shape[-1]))
    return kept.reshape(-1, samples.shape[-1]), scores.gather(1, idx).reshape(-1), idx


def kl_prior(policy, ref, prompts, responses) -> torch.Tensor:
    """KL_tok = max(0, (1/L) Σ_t KL(π_0(·|x, y_<t) ‖ π_θ(·|x, y_<t))) per example, the exact next-token KL on the
    kept completion's positions (the direction of the code's ``KLDivLoss(log π_θ, log π_0, log_target=True)``). ``(B,)``."""
    return lm.per_token_kl(ref, policy, prompts, responses).mean(1).clamp_min(0.0)


def superhf_loss(policy, ref, prompts, responses, beta_kl: float):
    """L = mean_b [CE_θ(y_b|x_b) + β_KL·KL_tok,b] with CE the token-mean NLL of the completion only.
    Returns (L, CE, KL) as scalars (CE and KL batch means)."""
    ce = lm.nll_loss(policy, prompts, responses)
    kl = kl_prior(policy, ref, prompts, responses).mean()
    return ce + beta_kl * kl, ce, kl


def superhf_iteration(
    policy,
    ref,
    opt,
    prompts,
    reward_fn,
    beta_kl: float,
    superbatch: int,
    top_k: int,
    epochs: int = 1,
    top_p: float = 0.95,
    length: int = LENGTH,
    generator=None,
) -> dict:
    """One SuperHF iteration on a prompt group ``(G, P)``: sample S completions per prompt from π_θ (T = 1, top-p),
    score them with ``reward_fn``, keep the top-K per prompt, then ``epochs`` full-batch steps on
    :func:`superhf_loss`. Returns the kept pairs, all scores and the last step's (loss, CE, KL)."""
    G = prompts.shape[0]
    rep = prompts.repeat_interleave(superbatch, 0)
    ys = lm.sample(policy, rep, length, 1.0, generator, top_p=top_p)
    scores = reward_fn(rep, ys).float().view(G, superbatch)
    kept, kept_scores, _ = filter_top_k(ys.view(G, superbatch, length), scores, top_k)
    kept_prompts = prompts.repeat_interleave(top_k, 0)
    policy.train()
    for _ in range(epochs):
        loss, ce, kl = superhf_loss(policy, ref, kept_prompts, kept, beta_kl)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {
        "prompts": kept_prompts,
        "kept": kept,
        "kept_scores": kept_scores,
        "scores": scores,
        "loss": loss.detach(),
        "ce": float(ce.detach()),
        "kl": float(kl.detach()),
    }


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
    momentum: float = 0.9,
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
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
    return {"loss": loss.detach(), "baseline": momentum * b + (1 - momentum) * mean_r, "reward": ro.reward}


# --- the reward-hacking measure -------------------------------------------------------------------------------


def align_exact(hyp, ref) -> list[tuple[int, int]]:
    """METEOR's exact-match stage: scanning the hypothesis from its last word back, match each word to the last
    still-unmatched equal word of the reference. Returns (hyp index, ref index) pairs sorted by hyp index."""
    free = list(range(len(ref)))
    pairs = []
    for i in reversed(range(len(hyp))):
        for j in reversed(free):
            if hyp[i] == ref[j]:
                pairs.append((i, j))
                free.remove(j)
                break
    return sorted(pairs)


def meteor(hyp, ref, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5) -> float:
    """METEOR with exact matches only (no stems or synonyms; nltk's defaults α, β, γ), m = matched words:
        P = m/|hyp|, R = m/|ref|, F = P·R / (α·P + (1 − α)·R),
        penalty = γ·(chunks/m)^β,   score = F·(1 − penalty)
    where chunks = runs of matches contiguous in both strings. 0 when nothing matches."""
    pairs = align_exact(list(hyp), list(ref))
    m = len(pairs)
    if m == 0:
        return 0.0
    p, r = m / len(hyp), m / len(ref)
    fmean = p * r / (alpha * p + (1 - alpha) * r)
    chunks = 1 + sum(1 for (i0, j0), (i1, j1) in zip(pairs, pairs[1:]) if not (i1 == i0 + 1 and j1 == j0 + 1))
    return fmean * (1 - gamma * (chunks / m) ** beta)


def cross_prompt_meteor(
    prompts: torch.Tensor, responses: torch.Tensor, n_pairs: int, generator: torch.Generator
) -> float:
    """Mean METEOR over ``n_pairs`` random pairs of completions whose prompts (topics) differ: high = the model
    says the same thing whatever it is asked (mode collapse, reward hacking)."""
    topic, ys = prompts[:, 0].cpu(), responses.cpu().tolist()
    total, done = 0.0, 0
    while done < n_pairs:
        a, b = torch.randint(len(ys), (2, 4 * n_pairs), generator=generator)
        for i, j in zip(a.tolist(), b.tolist()):
            if topic[i] != topic[j]:
                total += meteor(ys[i], ys[j])
                done += 1
                if done == n_pairs:
                    break
    return total / n_pairs


# --- evaluation and the experiment ------------------------------------------------------------------------------


def eval_prompts(task: lang.TopicTask, per_topic: int, device) -> torch.Tensor:
    """Every topic ``per_topic`` times, ``(n_topics·per_topic, 1)``."""
    return task.topic_token(torch.arange(task.n_topics).repeat_interleave(per_topic)).unsqueeze(1).to(device)


def score_responses(task, prompts, responses, n_pairs: int, generator: torch.Generator) -> dict[str, float]:
    """Proxy and gold reward, share of "!" tokens, cross-prompt METEOR and distinct-2 of a set of completions."""
    return {
        "proxy_reward": float(lang.topic_proxy_reward(task, prompts, responses).mean()),
        "gold_reward": float(lang.topic_gold_reward(task, prompts, responses).mean()),
        "bang_frac": float((responses == task.bang).float().mean()),
        "meteor": cross_prompt_meteor(prompts, responses, n_pairs, generator),
        "distinct_2": lang.distinct_n(responses.cpu(), 2),
    }


def evaluate(task, policy, ref, prompts, n_pairs: int, generator) -> tuple[dict[str, float], torch.Tensor]:
    """Sample one completion per prompt from π_θ at T = 1; the numbers of :func:`score_responses` plus
    KL(π_θ‖π_0) = mean log π_θ(y|x) − log π_0(y|x) on those samples (nats per sequence, k1)."""
    ys = lm.sample(policy, prompts, LENGTH, 1.0, generator)
    out = score_responses(task, prompts, ys, n_pairs, _cpu_gen(generator))
    out["kl_from_init"] = float(lm.kl_on_samples(policy, ref, prompts, ys))
    return out, ys


def _cpu_gen(generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator, device=generator.device)))


def make_init(task, p, seed: int, device):
    """π_0: a TinyGRULM after ``sft_steps`` AdamW steps on :func:`labkit.data.language.topic_sft_data`."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = lm.TinyGRULM(task.vocab_size).to(device)
    x, y = lang.topic_sft_data(task, 4096, LENGTH, gen)
    lm.train_nll(model, x.to(device), y.to(device), p.sft_steps, lr=p.sft_lr, batch_size=64, generator=gen)
    return model


def arms(p) -> list[tuple[str, str, float]]:
    """(series, kind, coefficient) of every trained arm."""
    betas = sorted({0.0, p.beta_kl, *(SWEEP_BETAS if p.sweep else ())})
    ppos = sorted({p.ppo_kl_coef, *(SWEEP_PPO if p.sweep else ())})
    return [(shf_name(b), "superhf", b) for b in betas] + [(ppo_name(c), "ppo", c) for c in ppos]


def shf_name(beta: float) -> str:
    return f"SuperHF β_KL={beta:g}"


def ppo_name(coef: float) -> str:
    return f"PPO c={coef:g}"


def train_arm(ctx, task, init, kind, coef, seed, series, bar, eval_x, arm_index) -> tuple[dict, torch.Tensor]:
    """Train one arm from a copy of π_0 for ``n_iters`` iterations, evaluating at step = completions sampled."""
    p, dev = ctx.p, ctx.device
    ref = lm.frozen_copy(init)
    policy = copy.deepcopy(init).train()
    opt = torch.optim.Adam(policy.parameters(), lr=p.lr)
    gen = torch.Generator(device=dev).manual_seed(10_000 * seed + 97 * arm_index + 1)
    reward_fn = lambda x, y: lang.topic_proxy_reward(task, x, y)  # noqa: E731
    per_iter = p.prompts_per_group * p.superbatch
    baseline = None
    for it in range(p.n_iters + 1):
        if it % p.eval_every == 0 or it == p.n_iters:
            numbers, ys = evaluate(task, policy, ref, eval_x, p.meteor_pairs, gen)
            for metric, value in numbers.items():
                ctx.history.log(it * per_iter, series, metric, value, seed=seed)
        if it == p.n_iters:
            return numbers, ys
        prompts = lang.topic_prompts(task, p.prompts_per_group, _cpu_gen(gen)).to(dev)
        if kind == "superhf":
            out = superhf_iteration(
                policy, ref, opt, prompts, reward_fn, coef, p.superbatch, p.top_k, p.sft_epochs, p.top_p, generator=gen
            )
        else:
            out = ppo_iteration(
                policy,
                ref,
                opt,
                prompts.repeat_interleave(p.superbatch, 0),
                reward_fn,
                coef,
                baseline,
                p.ppo_epochs,
                p.clip_eps,
                generator=gen,
            )
            baseline = out["baseline"]
        ctx.check(out["loss"], it, series)
        bar.update(1)


def best_of_init(task, init, eval_x, n: int, n_pairs: int, gen) -> tuple[dict, torch.Tensor]:
    """Best-of-n from π_0 (no training): n samples per eval prompt, keep the highest proxy reward."""
    rep = eval_x.repeat_interleave(n, 0)
    ys = lm.sample(init, rep, LENGTH, 1.0, gen)
    scores = lang.topic_proxy_reward(task, rep, ys).view(-1, n)
    best, _, _ = best_of_n(ys.view(-1, n, LENGTH), scores, n)
    out = score_responses(task, eval_x, best, n_pairs, _cpu_gen(gen))
    out["kl_from_init"] = math.log(n) - (n - 1) / n  # the analytic bound (ties make it smaller)
    return out, best


# --- the claim checks -----------------------------------------------------------------------------------------


def reward_claim(shf, init, ppo, gain: float = 1.0, slack: float = 0.25) -> ClaimCheck:
    """Final proxy reward, mean over seeds: SuperHF(β_KL) ≥ π_0 + ``gain`` and ≥ PPO − ``slack`` (same samples)."""
    s, i, q = float(np.mean(shf)), float(np.mean(init)), float(np.mean(ppo))
    return ClaimCheck(
        claim=f"proxy reward: SuperHF(β_KL) ≥ initial model + {gain:g} and ≥ PPO − {slack:g} at the same sample budget",
        passed=bool(s >= i + gain and s >= q - slack),
        numbers={
            "proxy_superhf": s,
            "proxy_init": i,
            "proxy_ppo": q,
            "superhf_per_seed": [round(float(v), 3) for v in shf],
            "ppo_per_seed": [round(float(v), 3) for v in ppo],
        },
    )


def hacking_claim(meteor_kl, meteor_nokl, gold_kl, gold_nokl, margin: float = 0.05) -> ClaimCheck:
    """Mean over seeds: METEOR(β_KL) ≤ METEOR(β_KL = 0) − ``margin`` and gold(β_KL) > gold(β_KL = 0)."""
    mk, mn, gk, gn = (float(np.mean(v)) for v in (meteor_kl, meteor_nokl, gold_kl, gold_nokl))
    return ClaimCheck(
        claim=f"reward hacking: cross-prompt METEOR of SuperHF(β_KL) ≤ SuperHF(β_KL=0) − {margin:g}, and higher gold reward",
        passed=bool(mk <= mn - margin and gk > gn),
        numbers={
            "meteor_kl": mk,
            "meteor_no_kl": mn,
            "gold_kl": gk,
            "gold_no_kl": gn,
            "meteor_kl_per_seed": [round(float(v), 3) for v in meteor_kl],
            "meteor_no_kl_per_seed": [round(float(v), 3) for v in meteor_nokl],
        },
    )


def beats_ppo_claim(shf, ppo) -> ClaimCheck:
    """Reported only: the paper's "SuperHF exceeds PPO on the reward-model score" (the card asserts it nowhere
    until a standard run with 3 seeds has shown it)."""
    s, q = float(np.mean(shf)), float(np.mean(ppo))
    return ClaimCheck(
        claim="SuperHF(β_KL) proxy reward > PPO proxy reward",
        passed=bool(s > q),
        numbers={"proxy_superhf": s, "proxy_ppo": q},
        asserted=False,
    )


# --- figures --------------------------------------------------------------------------------------------------


def decode(task: lang.TopicTask, prompt: int, tokens) -> str:
    """Words as ``w<i>``, relevant ones to the prompt's topic in capitals (``W<i>``), "!" as is."""
    rel = set(task.relevant()[prompt - task.n_words - 1].tolist())
    return " ".join("!" if t == task.bang else (f"W{t}" if t in rel else f"w{t}") for t in tokens)


def make_figures(result) -> dict:
    hist, x = result.history, result.extras
    series = x["series"]
    budget = "completions sampled (per method)"
    figs = {
        "proxy": viz.curves(
            hist,
            "proxy_reward",
            series=series,
            xlabel=budget,
            title='Proxy reward R (what is optimised; pays 0.5 per "!")',
        ),
        "gold": viz.curves(
            hist,
            "gold_reward",
            series=series,
            xlabel=budget,
            title="Gold reward (relevant words, −0.5 per repeat; evaluation only)",
        ),
        "kl": viz.curves(
            hist,
            "kl_from_init",
            series=series,
            xlabel=budget,
            ylabel="nats per sequence",
            title="KL(π_θ ‖ π_0) on fresh samples (k1 estimate)",
        ),
        "bang": viz.curves(
            hist,
            "bang_frac",
            series=series,
            xlabel=budget,
            ylabel='share of "!" tokens',
            title='The exploit: share of "!" tokens',
        ),
        "meteor": viz.curves(
            hist,
            "meteor",
            series=series,
            xlabel=budget,
            title="Cross-prompt METEOR similarity (high = same answer to every topic)",
        ),
    }
    final = x["final"]
    figs["hacking"] = viz.bars(
        {k: v["bang_frac"] for k, v in final.items()},
        ylabel='share of "!"',
        title='Reward hacking at the end: share of "!" tokens (dots: seeds)',
    )
    figs["tradeoff"] = point_figure(
        final,
        "proxy_reward",
        "meteor",
        "final proxy reward",
        "cross-prompt METEOR",
        "Reward against reward hacking (one point per arm)",
    )
    figs["gold_vs_kl"] = trajectory_figure(hist, series)
    figs["examples"] = examples_figure(x["examples"])
    return figs


def point_figure(final, xm, ym, xlabel, ylabel, title):
    import plotly.graph_objects as go

    colours = viz.color_map(final)
    fig = go.Figure()
    for name, v in final.items():
        fig.add_trace(
            go.Scatter(
                x=[np.mean(v[xm])],
                y=[np.mean(v[ym])],
                mode="markers+text",
                name=name,
                text=[name],
                textposition="top center",
                marker={"size": 11, "color": colours[name]},
            )
        )
    fig.update_layout(
        title=title, xaxis_title=xlabel, yaxis_title=ylabel, template="plotly_white", height=420, showlegend=False
    )
    return fig


def trajectory_figure(hist, series):
    """Gold reward against KL(π_θ‖π_0) along training (means over seeds): compare methods at matched KL."""
    import plotly.graph_objects as go

    means = hist.groupby(["series", "metric", "step"])["value"].mean()
    colours = viz.color_map(series)
    fig = go.Figure()
    for name in series:
        fig.add_trace(
            go.Scatter(
                x=means[name]["kl_from_init"].values,
                y=means[name]["gold_reward"].values,
                mode="lines+markers",
                name=name,
                line={"color": colours[name]},
            )
        )
    fig.update_layout(
        title="Gold reward against KL(π_θ ‖ π_0): the methods at matched KL",
        xaxis_title="KL(π_θ ‖ π_0), nats per sequence",
        yaxis_title="gold reward",
        template="plotly_white",
        height=400,
    )
    return fig


def examples_figure(examples: dict):
    import plotly.graph_objects as go

    names = list(examples)
    fig = go.Figure(
        go.Table(
            header={"values": ["topic"] + names},
            cells={"values": [list(range(len(examples[names[0]])))] + [examples[n] for n in names], "align": "left"},
        )
    )
    fig.update_layout(title="One sampled completion per topic at the end (seed 0; W = relevant word)", height=420)
    return fig


# --- the experiment -----------------------------------------------------------------------------------------------


@method_run(PARAMS, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext) -> Outcome:
    p, dev = ctx.p, ctx.device
    if p.top_k > p.superbatch:
        raise ValueError(f"top_k={p.top_k} must not exceed superbatch={p.superbatch}")
    task = lang.TopicTask()
    seeds = [ctx.seed + k for k in range(p.n_seeds)]
    plan = arms(p)
    bon = f"best-of-{p.superbatch} (π_0)"
    bar = ctx.bar(len(seeds) * len(plan) * p.n_iters, f"SuperHF vs PPO: {len(plan)} arms × {len(seeds)} seed(s)")
    final = {name: {m: [] for m in METRICS} for name in ["π_0", bon] + [a[0] for a in plan]}
    examples = {}
    for seed in seeds:
        init = make_init(task, p, seed, dev)
        eval_x = eval_prompts(task, p.eval_per_topic, dev)
        gen = torch.Generator(device=dev).manual_seed(10_000 * seed)
        ref = lm.frozen_copy(init)
        results = {
            "π_0": evaluate(task, init, ref, eval_x, p.meteor_pairs, gen),
            bon: best_of_init(task, init, eval_x, p.superbatch, p.meteor_pairs, gen),
        }
        for k, (name, kind, coef) in enumerate(plan):
            results[name] = train_arm(ctx, task, init, kind, coef, seed, name, bar, eval_x, k)
        for name, (numbers, ys) in results.items():
            for m in METRICS:
                final[name][m].append(numbers[m])
            if seed == seeds[0]:
                first = torch.arange(task.n_topics) * p.eval_per_topic
                examples[name] = [decode(task, int(eval_x[i, 0]), ys[i].tolist()) for i in first.tolist()]
    bar.close()
    kl_arm, nokl, ppo = shf_name(p.beta_kl), shf_name(0.0), ppo_name(p.ppo_kl_coef)
    f = final
    claims = [
        reward_claim(f[kl_arm]["proxy_reward"], f["π_0"]["proxy_reward"], f[ppo]["proxy_reward"]),
        hacking_claim(f[kl_arm]["meteor"], f[nokl]["meteor"], f[kl_arm]["gold_reward"], f[nokl]["gold_reward"]),
        beats_ppo_claim(f[kl_arm]["proxy_reward"], f[ppo]["proxy_reward"]),
    ]
    metrics = {f"{m}[{name}]": float(np.mean(v[m])) for name, v in final.items() for m in METRICS}
    metrics["gold_reward"] = metrics[f"gold_reward[{kl_arm}]"]
    return Outcome(
        metrics=metrics,
        claims=claims,
        extras={
            "series": [a[0] for a in plan],
            "final": final,
            "examples": examples,
            "arms": {"superhf": kl_arm, "no_kl": nokl, "ppo": ppo, "best_of": bon},
        },
    )

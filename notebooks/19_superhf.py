# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -papermill
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 19 · SuperHF — Supervised Iterative Learning from Human Feedback
#
# [arXiv 2310.16763](https://arxiv.org/abs/2310.16763) (SoLaR workshop, NeurIPS 2023) · family: **alignment**
#
# **What you will see:** a tiny GRU language model sampled, filtered by an exploitable reward model and fine-tuned on
# its own best completions (with and without a KL prior), against PPO with the same number of sampled completions.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
beta_kl = None  # weight of the KL prior KL(pi_0 || pi_theta); the zero-weight arm is always trained
superbatch = None  # S, completions sampled per prompt per iteration
top_k = None  # K, completions kept per prompt
prompts_per_group = None  # prompts per iteration (prompt_accumulation_steps in the code)
ppo_kl_coef = None  # PPO's KL coefficient in its reward
n_iters = None  # iterations (the sample budget is n_iters x prompts x S per method)

# %%
import inspect

import pandas as pd
import torch
from IPython.display import Markdown

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.data import language as lang
from labkit.methods import superhf

overrides = overrides_from(superhf.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# PPO-based RLHF optimises a reward model $R$ with reinforcement learning: powerful, but unstable and costly.
# Supervised fine-tuning is stable but cannot get better than its data. SuperHF makes its own data: it repeatedly
# samples from the *current* policy, keeps what the reward model likes best, and fine-tunes on it.
# For each group of prompts $x$:
#
# 1. sample $S$ completions $y_1,\dots,y_S \sim \pi_\theta(\cdot\mid x)$ (temperature 1, top-$p$ 0.95);
# 2. keep the top-$K$ by $R(x, y_s)$; with $K = 1$, $y^\star = \arg\max_s R(x, y_s)$;
# 3. take a supervised step on the kept pairs with
#
# $$\mathcal L(\theta) = \underbrace{-\frac1L\sum_t \log \pi_\theta(y^\star_t \mid x, y^\star_{<t})}_{\text{CE, completion tokens only}}
# \;+\; \beta_{\rm KL}\,\max\Big(0,\ \frac1L \sum_t \mathrm{KL}\big(\pi_0(\cdot\mid x, y^\star_{<t})\,\big\|\,\pi_\theta(\cdot\mid x, y^\star_{<t})\big)\Big);$$
#
# 4. repeat with the updated $\pi_\theta$: the distribution the samples come from improves (a curriculum).
#
# Without the prior this is expert iteration (online best-of-$S$ distillation); the paper's point is that the KL prior
# towards the initial model $\pi_0$ is what keeps it from reward hacking. Note the direction: $\mathrm{KL}(\pi_0\|\pi_\theta)$
# on the *kept* completions' positions, exactly (a sum over the vocabulary), as the official code's
# `KLDivLoss(log π_θ, log π_0, log_target=True)` computes it.

# %% [markdown]
# ## The loss, and a case you can check by hand

# %%
print(inspect.getsource(superhf.filter_top_k))
print(inspect.getsource(superhf.kl_prior))
print(inspect.getsource(superhf.superhf_loss))

# %% [markdown]
# Two tokens $\{0, 1\}$, a response $y^\star = (1, 0)$ of $L = 2$ tokens. The policy's next-token distributions are
# $(\tfrac14, \tfrac34)$ then $(\tfrac12, \tfrac12)$; $\pi_0$'s are $(\tfrac12, \tfrac12)$ then $(\tfrac14, \tfrac34)$.
# CE $= -\tfrac12(\log\tfrac34 + \log\tfrac12) = 0.490$;
# $\mathrm{KL}_0 = \tfrac12\log 2 + \tfrac12\log\tfrac23 = 0.144$, $\mathrm{KL}_1 = \tfrac14\log\tfrac12 + \tfrac34\log\tfrac32 = 0.131$,
# so $\mathrm{KL}_{\rm tok} = 0.137$ and with $\beta_{\rm KL} = 0.35$ the loss is $0.490 + 0.35\cdot 0.137 = 0.538$.
# The filter keeps the best of each prompt's samples; a tie goes to the earlier sample.


# %% tags=["nbval-check-output"]
class TableLM(torch.nn.Module):
    """Next-token logits that depend only on the position (a hand-checkable 'language model')."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table))

    def forward(self, tokens):
        return self.table[: tokens.shape[1]].unsqueeze(0).expand(tokens.shape[0], -1, -1)


log3 = torch.log(torch.tensor(3.0)).item()
policy, ref = TableLM([[0.0, log3], [0.0, 0.0]]), TableLM([[0.0, 0.0], [0.0, log3]])
loss, ce, kl = superhf.superhf_loss(policy, ref, torch.tensor([[0]]), torch.tensor([[1, 0]]), beta_kl=0.35)
print(
    f"CE = {ce.item():.3f} (hand 0.490)   KL_tok = {kl.item():.3f} (hand 0.137)   loss = {loss.item():.3f} (hand 0.538)"
)
scores = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 0.0, 5.0, 1.0]])
kept, kept_scores, idx = superhf.filter_top_k(torch.arange(8).view(2, 4, 1), scores, 1)
print("kept sample per prompt:", idx.flatten().tolist(), " scores:", kept_scores.tolist())

# %% [markdown]
# ## The algorithm's loop
#
# One SuperHF iteration: sample $S$ completions per prompt from the current policy, score them, keep the top-$K$,
# take supervised steps on $\mathcal L$. Training is nothing but this function called again and again.

# %%
print(inspect.getsource(superhf.superhf_iteration))

# %% [markdown]
# Run on a tiny case: the position-only `TableLM` above over 3 tokens, starting uniform, with a reward that counts
# the token 2. Five iterations (2 prompts × 8 samples, one step each, SGD lr 1): the kept completions are full of
# 2s, so the policy's probability of token 2 rises at every position, while the prior ($\beta_{\rm KL} = 0.35$)
# pulls back towards the uniform $\pi_0$.

# %%
tiny_pol, tiny_ref = TableLM(torch.zeros(4, 3).tolist()), TableLM(torch.zeros(4, 3).tolist())
tiny_opt = torch.optim.SGD(tiny_pol.parameters(), lr=1.0)
g = torch.Generator().manual_seed(0)
for it in range(5):
    out = superhf.superhf_iteration(
        tiny_pol,
        tiny_ref,
        tiny_opt,
        torch.zeros(2, 1, dtype=torch.long),
        lambda x, y: (y == 2).sum(1).float(),
        beta_kl=0.35,
        superbatch=8,
        top_k=1,
        top_p=1.0,
        length=3,
        generator=g,
    )
    probs = torch.softmax(tiny_pol.table.detach()[:3], -1)[:, 2]
    print(
        f"iteration {it}: kept scores {out['kept_scores'].tolist()}, P(token 2) per position "
        f"{[round(v, 2) for v in probs.tolist()]}"
    )

# %% [markdown]
# ## The data: topics, a proxy reward with a loophole, a gold reward
#
# 8 one-token prompts (topics), 24 words plus "!", responses of 8 tokens. Topic $k$ owns 3 relevant words.
# The **proxy** reward the methods optimise is $\min(\#\text{relevant}, 4) + 0.5\cdot\#\text{"!"}$; the **gold** reward
# (evaluation only) is $\min(\#\text{relevant}, 4) - 0.5\cdot\#\text{repeated tokens}$. So "!" and repetition pay under the
# proxy and cost under gold: the proxy's best answer, 4 relevant words and 4 "!", has proxy 6 but gold at most 2, while the gold
# optimum (4 relevant, only one repeat) is 3.5. $\pi_0$ is a `TinyGRULM` after `sft_steps` SFT steps (300 unless set) on responses that mix
# relevant and random words (2% "!"). Below: SFT data, with relevant words in capitals.

# %% tags=["nbval-check-output"]
task = lang.TopicTask()
x, y = lang.topic_sft_data(task, 6, 8, torch.Generator().manual_seed(0))
rows = [
    {
        "topic": int(x[i, 0]) - task.n_words - 1,
        "response": superhf.decode(task, int(x[i, 0]), y[i].tolist()),
        "proxy": lang.topic_proxy_reward(task, x[i : i + 1], y[i : i + 1]).item(),
        "gold": lang.topic_gold_reward(task, x[i : i + 1], y[i : i + 1]).item(),
    }
    for i in range(6)
]
print(pd.DataFrame(rows).to_string(index=False))
hack, topic0 = torch.tensor([[0, 1, 2, 0] + [task.bang] * 4]), task.topic_token(torch.zeros(1, 1, dtype=torch.long))
print(
    "a proxy optimum 'W0 W1 W2 W0 ! ! ! !' on topic 0: proxy",
    lang.topic_proxy_reward(task, topic0, hack).item(),
    " gold",
    lang.topic_gold_reward(task, topic0, hack).item(),
)

# %% [markdown]
# ## Train SuperHF (with and without the prior) and PPO at the same sample budget
#
# Every arm starts from the same $\pi_0$. With the sizes of the chosen preset:

# %%
k = superhf.Knobs(**resolve_params(superhf.PARAMS, preset, overrides))
per_iter = k.prompts_per_group * k.superbatch
Markdown(
    f"Adam with lr {k.lr:g} (toy scale) for every arm. An iteration draws {k.prompts_per_group} random topics and "
    f"samples $S = {k.superbatch}$ completions for each: **{per_iter} sampled completions per iteration for every "
    f"method**, {k.n_iters * per_iter:,} over the {k.n_iters} iterations.\n\n"
    f"- **SuperHF** ($\\beta_{{\\rm KL}} = 0$ and ${k.beta_kl:g}$): keep the best {k.top_k} completion(s) per topic "
    f"(by the proxy), {k.sft_epochs} gradient steps on $\\mathcal L$ over the kept pairs (the code does one pass; "
    f"more steps let a short run move at toy scale).\n"
    f"- **PPO** (sequence level, `labkit.substrates.rlhf`): reward $R - {k.ppo_kl_coef:g}\\,(\\log\\pi_{{\\rm old}}(y|x)"
    f" - \\log\\pi_0(y|x))$, advantage = that minus a running-mean baseline, {k.ppo_epochs} steps on the clipped "
    f"surrogate ($\\varepsilon = {k.clip_eps:g}$).\n"
    f"- **best-of-{k.superbatch} from $\\pi_0$** (no training) for reference.\n\n"
    f"Every {k.eval_every} iterations each policy is evaluated on {k.eval_per_topic} fresh samples per topic "
    f"(temperature 1): proxy, gold, $\\mathrm{{KL}}(\\pi_\\theta\\|\\pi_0)$ (the k1 estimate, nats per sequence, on "
    f'those samples: NOT the training prior\'s direction), the share of "!", and **cross-prompt METEOR**: the mean '
    f"METEOR similarity of {k.meteor_pairs} random pairs of completions to *different* topics (exact matches; nltk is "
    f"not installed, so `superhf.meteor` implements the formula). **{k.n_seeds} seeds** (each: its own SFT data, "
    f"$\\pi_0$ and samples); the claims below are intervals over them."
)

# %%
result = superhf.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **Rewards per sampled completion.** The x-axis is the budget: completions sampled by each method.

# %%
result.figures["proxy"]

# %%
result.figures["gold"]

# %% [markdown]
# **Distance from $\pi_0$** and **the exploit**. With the prior, SuperHF drifts less from $\pi_0$ than without it;
# read the curves for how much less at this budget.

# %%
result.figures["kl"]

# %%
result.figures["bang"]

# %%
result.figures["hacking"]

# %% [markdown]
# **Matched KL.** Gold reward against $\mathrm{KL}(\pi_\theta\|\pi_0)$ along training: at equal distance from $\pi_0$,
# which method has bought more gold reward?

# %%
result.figures["gold_vs_kl"]

# %% [markdown]
# **The reward-hacking measure.** Cross-prompt METEOR over training, and the paper's trade-off chart (reward against
# similarity, one point per arm).

# %%
result.figures["meteor"]

# %%
result.figures["tradeoff"]

# %% [markdown]
# **Example completions** (seed 0, one sampled completion per topic at the end; capitals = relevant words).

# %%
result.figures["examples"]

# %% [markdown]
# ## The claim check
#
# Each claim compares one quantity per seed against a margin fixed before the run; the verdict comes from the 95%
# t-interval of the mean over the seeds: **holds** (the whole interval on the claimed side), **does not hold** (the
# whole interval on the other side), **inconclusive** (it straddles the margin).
#
# - Headline, the abstract's claim: SuperHF's reward-model score (here the proxy reward) exceeds PPO's, at the same
#   number of sampled completions (margin 0).
# - SuperHF raises the proxy reward above $\pi_0$ (margin 0).
# - The KL prior lowers reward hacking as the paper measures it: cross-prompt METEOR of SuperHF($\beta_{\rm KL}$) below
#   that of SuperHF($\beta_{\rm KL} = 0$) (margin 0, lower is better); and, the toy's own measure, its gold reward higher.

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)

# %% [markdown]
# Every arm's final numbers (means over seeds; not compared by nbval, they move across CPUs):

# %%
m = result.metrics
for o in result.extras["outcomes"]:
    print(f"{o.arm.label:>22}: " + "  ".join(f"{name} {fmt(o.mean(name), 3)}" for name in superhf.METRICS))
for o in result.extras["outcomes"]:
    per_seed = {name: ", ".join(fmt(v, 3) for v in o.values(name)) for name in ("proxy_reward", "meteor", "gold_reward")}
    print(f"{o.arm.label:>22} per seed: " + " | ".join(f"{name} {vals}" for name, vals in per_seed.items()))

# %%
head, gain, met, gold = result.claims
x = result.extras
Markdown(
    f"**What showed at the {result.preset} preset** ({head.interval.n} seeds; read the verdicts above).\n\n"
    f"- *Reward.* SuperHF beating PPO: **{head.verdict.value}** (SuperHF − PPO = {head.interval.text(head.decimals)}). "
    f"SuperHF above $\\pi_0$: **{gain.verdict.value}** ({gain.interval.text(gain.decimals)}). PPO with the same "
    f"samples ends at proxy {fmt(x['ppo'].mean('proxy_reward'), 2)}, SuperHF with the prior at "
    f"{fmt(x['superhf'].mean('proxy_reward'), 2)}, best-of-{result.params['superbatch']} from $\\pi_0$ at "
    f"{fmt(x['best_of'].mean('proxy_reward'), 2)}; the seeds disagree a lot (per-seed numbers above), so "
    f"{head.interval.n} seeds cannot settle either comparison unless it is large.\n"
    f"- *Reward hacking.* Lower cross-prompt METEOR with the prior: **{met.verdict.value}**; higher gold reward with "
    f"the prior: **{gold.verdict.value}**. Without the prior the policy can collapse onto *topic-specific* "
    f"repetition (one relevant word eight times), different for each topic, which scores *low* on a measure that "
    f'compares completions to different prompts; the shared exploit token "!" is what raises cross-prompt METEOR. '
    f'On this toy METEOR measures "!"-hacking more than collapse; distinct-2 and gold are the better signals.'
)

# %% [markdown]
# What this toy does **not** show: the paper's LLaMA-7B + LoRA runs, GPT-4 evaluations and calibration. Not
# implemented here: the FTL baseline and the card's full-preset tiny GPT with TRL's PPO (the standard and full
# presets run this same toy for longer, with a β_KL sweep {0, 0.1, 0.35, 1} and PPO c ∈ {0.01, 0.05, 0.2}).

# %% [markdown]
# ## Try it
#
# Change $\beta_{\rm KL}$ (0 is plain expert iteration), the superbatch $S$, $K$, the prompts per iteration, PPO's KL
# coefficient or the number of iterations, then Train. The plot shows the gold reward of each arm while it trains.

# %%
import widgets

widgets.explorer("superhf", metric="gold_reward")

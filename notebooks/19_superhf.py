# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
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
beta_kl = None            # weight of the KL prior KL(pi_0 || pi_theta); the zero-weight arm is always trained
superbatch = None         # S, completions sampled per prompt per iteration
top_k = None              # K, completions kept per prompt
prompts_per_group = None  # prompts per iteration (prompt_accumulation_steps in the code)
ppo_kl_coef = None        # PPO's KL coefficient in its reward
n_iters = None            # iterations (the sample budget is n_iters x prompts x S per method)

# %%
import inspect

import pandas as pd
import torch

import widgets
from labkit import viz
from labkit.core import overrides_from
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
        return self.table[:tokens.shape[1]].unsqueeze(0).expand(tokens.shape[0], -1, -1)


log3 = torch.log(torch.tensor(3.0)).item()
policy, ref = TableLM([[0.0, log3], [0.0, 0.0]]), TableLM([[0.0, 0.0], [0.0, log3]])
loss, ce, kl = superhf.superhf_loss(policy, ref, torch.tensor([[0]]), torch.tensor([[1, 0]]), beta_kl=0.35)
print(f"CE = {ce.item():.3f} (hand 0.490)   KL_tok = {kl.item():.3f} (hand 0.137)   loss = {loss.item():.3f} (hand 0.538)")
scores = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 0.0, 5.0, 1.0]])
kept, kept_scores, idx = superhf.filter_top_k(torch.arange(8).view(2, 4, 1), scores, 1)
print("kept sample per prompt:", idx.flatten().tolist(), " scores:", kept_scores.tolist())

# %% [markdown]
# ## The data: topics, a proxy reward with a loophole, a gold reward
#
# 8 one-token prompts (topics), 24 words plus "!", responses of 8 tokens. Topic $k$ owns 3 relevant words.
# The **proxy** reward the methods optimise is $\min(\#\text{relevant}, 4) + 0.5\cdot\#\text{"!"}$; the **gold** reward
# (evaluation only) is $\min(\#\text{relevant}, 4) - 0.5\cdot\#\text{repeated tokens}$. So "!" and repetition pay under the
# proxy and cost under gold: the proxy's best answer, 4 relevant words and 4 "!", has proxy 6 but gold at most 2, while the gold
# optimum (4 relevant, only one repeat) is 3.5. $\pi_0$ is a `TinyGRULM` after 300 SFT steps on responses that mix
# relevant and random words (2% "!"). Below: SFT data, with relevant words in capitals.

# %% tags=["nbval-check-output"]
task = lang.TopicTask()
x, y = lang.topic_sft_data(task, 6, 8, torch.Generator().manual_seed(0))
rows = [{"topic": int(x[i, 0]) - task.n_words - 1, "response": superhf.decode(task, int(x[i, 0]), y[i].tolist()),
         "proxy": lang.topic_proxy_reward(task, x[i:i + 1], y[i:i + 1]).item(),
         "gold": lang.topic_gold_reward(task, x[i:i + 1], y[i:i + 1]).item()} for i in range(6)]
print(pd.DataFrame(rows).to_string(index=False))
hack, topic0 = torch.tensor([[0, 1, 2, 0] + [task.bang] * 4]), task.topic_token(torch.zeros(1, 1, dtype=torch.long))
print("a proxy optimum 'W0 W1 W2 W0 ! ! ! !' on topic 0: proxy", lang.topic_proxy_reward(task, topic0, hack).item(),
      " gold", lang.topic_gold_reward(task, topic0, hack).item())

# %% [markdown]
# ## Train SuperHF (β_KL = 0 and 0.35) and PPO at the same sample budget
#
# Every arm starts from the same $\pi_0$ and uses Adam with lr $10^{-3}$ (toy scale). An iteration draws 2 random
# topics and samples $S = 16$ completions for each, **32 sampled completions per iteration for every method**.
# - **SuperHF**: keep the best completion per topic (by the proxy), 4 gradient steps on $\mathcal L$ over the 2 kept
#   pairs (the code does one pass; 4 steps make 40 iterations enough to move at toy scale).
# - **PPO** (sequence level, :mod:`labkit.substrates.rlhf`): reward $R - 0.05\,(\log\pi_{\rm old}(y|x) - \log\pi_0(y|x))$,
#   advantage = that minus a running-mean baseline, 4 steps on the clipped surrogate ($\varepsilon = 0.2$).
# - **best-of-16 from $\pi_0$** (no training) for reference.
#
# Every 5 iterations each policy is evaluated on 16 fresh samples per topic (temperature 1): proxy, gold,
# $\mathrm{KL}(\pi_\theta\|\pi_0)$ (the k1 estimate, nats per sequence, on those samples: NOT the training prior's
# direction), the share of "!", and **cross-prompt METEOR**: the mean METEOR similarity of 200 random pairs of
# completions to *different* topics (exact matches; nltk is not installed, so `superhf.meteor` implements the formula).
# Two seeds (each: its own SFT data, $\pi_0$ and samples).

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
# The card's toy claim, final evaluation, mean of the 2 seeds: (1) proxy reward of SuperHF($\beta_{\rm KL} = 0.35$)
# $\ge$ $\pi_0$'s $+ 1.0$ and $\ge$ PPO's $- 0.25$ at the same sample budget; (2) its cross-prompt METEOR
# $\le$ that of SuperHF($\beta_{\rm KL} = 0$) $- 0.05$, and its gold reward higher. "SuperHF beats PPO" is reported, not
# asserted (the card asserts it only if a standard run with 3 seeds shows it; none has been made).

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)
m = result.metrics
print()
for arm in ["π_0", result.extras["arms"]["best_of"]] + result.extras["series"]:
    print(f"{arm:>22}: proxy {m[f'proxy_reward[{arm}]']:.3f}  gold {m[f'gold_reward[{arm}]']:.3f}  "
          f"KL {m[f'kl_from_init[{arm}]']:.3f}  '!' {m[f'bang_frac[{arm}]']:.3f}  "
          f"METEOR {m[f'meteor[{arm}]']:.3f}  distinct-2 {m[f'distinct_2[{arm}]']:.3f}")
print("claims hold:", result.claims_hold)

# %% [markdown]
# **What showed at the quick preset** (read the numbers above). Neither asserted check holds.
#
# - *Reward.* SuperHF with the prior raises the proxy reward well above $\pi_0$ (the $+1$ part holds), but PPO with
#   the same 1,280 sampled completions gets more proxy reward, by a little more than the 0.25 allowed, so check (1)
#   fails. SuperHF does not beat PPO here.
# - *Reward hacking.* The prior does what the paper says on gold reward and on drift: SuperHF($\beta_{\rm KL} = 0.35$)
#   has higher gold reward, a smaller $\mathrm{KL}$ from $\pi_0$ and a higher distinct-2 than without the prior. But
#   cross-prompt METEOR does **not** separate them the way the card expected. The unregularised arm collapses onto
#   *topic-specific* repetition (e.g. one relevant word eight times), which is different for each topic and so
#   scores *low* on a measure that compares completions to different prompts. The shared exploit token "!" is what
#   raises cross-prompt METEOR, and both SuperHF arms use it; the arm *with* the prior even ends with more "!"
#   than the one without. The prior held back the repetition collapse here, not the "!" exploit. The seeds also
#   disagree a lot (see the per-seed numbers). On this toy METEOR measures "!"-hacking, not collapse; distinct-2 and gold are the better signals.
#
# What this toy does **not** show: the paper's LLaMA-7B + LoRA runs, GPT-4 evaluations and calibration. Not
# implemented here: the FTL baseline and the card's full-preset tiny GPT with TRL's PPO (the standard and full
# presets run this same toy for longer, with a β_KL sweep {0, 0.1, 0.35, 1} and PPO c ∈ {0.01, 0.05, 0.2}).

# %% [markdown]
# ## Try it
#
# Change $\beta_{\rm KL}$ (0 is plain expert iteration), the superbatch $S$, $K$, the prompts per iteration, PPO's KL
# coefficient or the number of iterations, then Train. The plot shows the gold reward of each arm while it trains.

# %%
widgets.explorer("superhf", metric="gold_reward")

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
# # 05 · LaMo — Unleashing the Power of Pre-trained Language Models for Offline Reinforcement Learning
#
# [arXiv 2310.20587](https://arxiv.org/abs/2310.20587) (ICLR 2024) · family: **rl**
#
# **What you will see:** a Decision Transformer whose blocks come from the kit's pretrained tiny LM (frozen, with
# LoRA, MLP embeddings and an auxiliary language loss), against a DT trained from scratch, with few offline episodes
# on a 7×7 gridworld — and whether the "pretraining" (on arithmetic strings) carries anything to the grid.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
lam = None         # λ, weight of the auxiliary language loss
n_episodes = None  # offline episodes per seed
epsilon = None     # behaviour noise
lora_rank = None   # LoRA rank on each block's qkv
context = None     # K timesteps in the DT's context

# %%
import inspect

import numpy as np
import torch
from IPython.display import Markdown

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.methods import lamo
from labkit.models.adapters import count_parameters
from labkit.substrates import gridworld as gw
from labkit.substrates.pretrained_lm import QUICK_CONFIG, pretrained_lm

overrides = overrides_from(lamo.PARAMS, globals())
viz.notebook_setup()
torch.set_num_threads(1)

# %% [markdown]
# ## The idea
#
# A Decision Transformer reads a trajectory as tokens $(\hat R_1, s_1, a_1, \hat R_2, s_2, a_2, \dots)$ with the
# return-to-go $\hat R_t = \sum_{t'\ge t} r_{t'}$ and predicts $a_t$ from the hidden state of the $s_t$ token; at test
# time it is conditioned on a target return that drops by each reward received. LaMo builds it on a **pretrained
# language model**:
#
# 1. the transformer blocks are the LM's, **frozen**; only **LoRA** on the merged $Q/K/V$ projection trains,
#    $W' = W + \tfrac{\alpha}{r} BA$;
# 2. the linear embeddings become MLPs, $e(x) = W_2\,\mathrm{GELU}(W_1x) + W_1x$, and the head
#    $\hat a_t = W_4\,\mathrm{GELU}(W_3 h_{s_t})$;
# 3. the LM's own next-token loss is kept as an auxiliary loss, $\mathcal L = \mathcal L_{\rm act} + \lambda\,\mathcal
#    L_{\rm LM}$ with $\lambda = 0.1$, so the LM keeps its language skill.
#
# With discrete actions (the paper's Atari setting, and this grid)
# $\mathcal L_{\rm act} = -\frac{1}{|\text{valid}|}\sum_{t\ \text{valid}} \log \mathrm{softmax}(\hat a_t)[a_t]$.
# Here the "pretrained LM" is the kit's 2-layer TinyLM pretrained on arithmetic strings (`12+30=42;`), not GPT-2 on
# WikiText, and $\mathcal L_{\rm LM}$ is its pretraining loss on that corpus. It knows 12 positions only, so the DT
# gets a position table of $3K$ rows: the LM's 12 learned rows, then fresh ones.

# %% [markdown]
# ## The pieces, and a case you can check by hand

# %%
print(inspect.getsource(lamo.DecisionTransformer.tokens))
print(inspect.getsource(lamo.action_loss))
print(inspect.getsource(lamo.lamo_loss))

# %% [markdown]
# Two steps, four actions. Step 0 has logits $(\log 3, 0, 0, 0)$ and action 0: $p = 3/6$, loss $\log 2 \approx 0.693$.
# Step 1 is padding (a window that ran past its episode's end) and must not count. With $\mathcal L_{\rm LM} = 2$ and
# $\lambda = 0.1$ the total is $0.693 + 0.2$. Then the causal mask: changing $a_1$ must leave $\hat a_0$ and $\hat a_1$
# untouched (the $a_1$ token comes after the $s_1$ token that predicts it).

# %% tags=["nbval-check-output"]
logits = torch.tensor([[[np.log(3.0), 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
act = lamo.action_loss(logits, torch.tensor([[0, 2]]), torch.tensor([[True, False]]))
print(f"L_act = {act.item():.3f}  (hand: log 2 = {np.log(2):.3f})")
print(f"L = L_act + 0.1 * 2 = {lamo.lamo_loss(act, torch.tensor(2.0), 0.1).item():.3f}")
torch.manual_seed(0)
lm = lamo.lamo_backbone(pretrained_lm(QUICK_CONFIG, progress=False), r=8, alpha=16.0, dropout=0.0)
dt = lamo.DecisionTransformer(lm, state_dim=2, n_actions=4, context=3, max_timestep=30).eval()
R, S, t = torch.ones(1, 3), torch.rand(1, 3, 2, generator=torch.Generator().manual_seed(0)), torch.arange(3)[None]
with torch.no_grad():
    a, b = dt(R, S, torch.tensor([[0, 1, 2]]), t), dt(R, S, torch.tensor([[0, 3, 2]]), t)
print("a_1 changed -> steps 0, 1 unchanged:", bool(torch.allclose(a[:, :2], b[:, :2], atol=1e-6)),
      "| step 2 changed:", not bool(torch.allclose(a[:, 2], b[:, 2], atol=1e-6)))
print(f"trainable: {count_parameters(dt):,} of {count_parameters(dt, trainable_only=False):,} parameters "
      "(LoRA + embeddings + head)")

# %% [markdown]
# ## The training loop and the return-conditioned rollout
#
# One loop serves every arm: AdamW on the trainable parameters only, warm-up, gradient clipping; a batch of $K$-step
# windows each step and, when $\lambda > 0$, a batch of arithmetic lines from its own stream.

# %%
print(inspect.getsource(lamo.train_dt))

# %%
print(inspect.getsource(lamo.rollout))

# %% [markdown]
# ## The data: few episodes of a noisy expert on a 7×7 grid
#
# Slip 0.1 (a random action replaces the chosen one 10% of the time), 4 holes, horizon 30, reward 1 on reaching G.
# The behaviour policy is the value-iteration expert made $\varepsilon$-noisy. Returns are normalised as in D4RL
# (0 = uniform random policy, 100 = expert, both computed exactly on the known model).

# %%
p = lamo.Knobs(**resolve_params(lamo.PARAMS, preset, overrides))
mdp = lamo.make_world()
data = lamo.offline_data(mdp, p.n_episodes, p.epsilon, seed)
print(mdp.render())
print(data.summary())
print(f"behaviour normalised return (this data): {gw.normalised_return(mdp, data.episode_returns().mean()):.1f}; "
      f"exact for the eps-noisy expert: {gw.normalised_return(mdp, gw.expected_return(mdp, gw.noisy_policy(gw.expert_policy(mdp), p.epsilon))):.1f}")

# %% [markdown]
# ## Train LaMo, LaMo with λ = 0, a DT from scratch, and LaMo on a random-init LM

# %%
Markdown(f"Per seed: {p.n_episodes} episodes, $K = {p.context}$, {p.n_steps} steps of {p.batch_size} windows, "
         f"lr {p.lr:g} (embeddings, head) and {p.lm_lr:g} (inside the LM), LoRA $r = {p.lora_rank}$, "
         f"$\\alpha = {p.lora_alpha:g}$, $\\lambda = {p.lam:g}$; {p.n_seeds} seeds, {p.eval_episodes} evaluation "
         "episodes per arm and seed (actions drawn from the DT's softmax, target return 1). The DT from scratch is a "
         "fresh TinyLM of the same shape, every weight trained, with DT's linear embeddings and head. The paper trains "
         "100k steps at lr 1e-4 / 1e-5; this preset trains far fewer steps at a larger lr.")

# %%
result = lamo.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **Normalised return** per arm, with its 95% interval over seeds (dots: seeds; dotted line: the behaviour data).

# %%
result.figures["return"]

# %% [markdown]
# **Losses.** The action loss of every arm, and the LM's held-out arithmetic loss during DT training: with
# $\lambda = 0$ the LoRA update made for the grid also changes what the LM says about arithmetic; the language loss
# holds it.

# %%
result.figures["action_loss"]

# %%
result.figures["lm_loss"]

# %%
result.figures["trainable"]

# %% [markdown]
# **Rollouts** of the first seed's LaMo and DT on the grid (three evaluation episodes each).

# %%
result.figures["rollout"]

# %% [markdown]
# ## The claim check
#
# - **Headline** (the paper: with little data LaMo beats DT): LaMo − DT in normalised return, margin 0.
# - The card's toy claims: non-inferiority (LaMo ≥ DT − 5 points); the LM's held-out loss rises by ≤ 0.1 nats with
#   $\lambda = 0.1$, and by at least twice that with $\lambda = 0$.
# - The paper's ablation: LaMo beats the same recipe on a **random-init** LM (does the pretraining carry anything?).

# %%
for c in result.claims:
    print(c)

# %%
m, arms = result.metrics, {o.arm.key: o for o in result.extras["arms"]}
head, noninf, keep, forget = result.claims[:4]
pre = result.claims[4] if len(result.claims) > 4 else None
pre_text = (f"The random-init ablation: LaMo − LaMo(random-init LM) = {fmt(pre.interval.mean, 1, sign=True)} points "
            f"(**{pre.verdict.value}**; LaMo {fmt(m['return_lamo'], 1)}, random-init {fmt(m['return_lamo_random'], 1)}). "
            if pre is not None else "")
Markdown(
    f"**What showed at the {result.preset} preset** (read from this run). Headline, LaMo beats DT: "
    f"**{head.verdict.value}** (LaMo {fmt(m['return_lamo'], 1)}, DT {fmt(m['return_dt'], 1)}, gap "
    f"{fmt(head.interval.mean, 1, sign=True)}, 95% interval [{fmt(head.interval.low, 1, sign=True)}, "
    f"{fmt(head.interval.high, 1, sign=True)}] over {head.interval.n} seeds; behaviour data "
    f"{fmt(m['behaviour_return'], 1)}). Non-inferiority: **{noninf.verdict.value}**. {pre_text}"
    f"Language retention with λ={p.lam:g}: **{keep.verdict.value}** (rise {fmt(m['lm_rise_lamo'], 3, sign=True)} "
    f"nats); with λ=0 the rise is {fmt(m['lm_rise_lamo_lam0'], 2, sign=True)} nats (at least twice: "
    f"**{forget.verdict.value}**). LaMo trains {int(m['trainable_lamo']):,} parameters, the DT from scratch "
    f"{int(m['trainable_dt']):,}."
)

# %%
# non-inferiority and the quick preset's step budget: the per-seed gaps of this run and the evaluation's noise
gaps = np.array(arms["lamo"].normalised_return) - np.array(arms["dt"].normalised_return)
points_per_success = gw.normalised_return(mdp, 1.0) - gw.normalised_return(mdp, 0.0)  # the only reward is 1 at G
eval_se = [points_per_success * np.sqrt(s * (1 - s) / p.eval_episodes) for o in arms.values() for s in o.success]
quick_steps = resolve_params(lamo.PARAMS, "quick")["n_steps"]
Markdown(
    "**Non-inferiority and the step budget.** The quick preset used to train 80 steps per arm; when we ran it there, "
    "LaMo and the DT from scratch ended level on every seed (LaMo 31, DT 32, gap −1 points, 95% interval [−4, +2]) "
    f"and non-inferiority held. The quick preset was then cut to {quick_steps} steps, so that the notebook takes about 20 s. "
    f"This run trained {p.n_steps} steps: non-inferiority is **{noninf.verdict.value}**, with per-seed gaps "
    f"LaMo − DT of {', '.join(fmt(g, 1, sign=True) for g in gaps)} points (seed-to-seed std "
    f"{fmt(np.std(gaps, ddof=1), 1)}; the interval's half-width is "
    f"{fmt((noninf.interval.high - noninf.interval.low) / 2, 1)} with {noninf.interval.n} seeds). The spread is of "
    f"the size of the evaluation's own noise: a score from {p.eval_episodes} sparse-reward episodes carries a "
    f"binomial standard error of {fmt(min(eval_se), 1)} to {fmt(max(eval_se), 1)} points here, so with "
    f"{noninf.interval.n} seeds one seed where the arms land far apart is enough to widen the interval past the "
    f"margin ({noninf.margin:g} points), whichever arm is ahead."
)

# %%
gap_pre = "" if pre is None else (
    f"The random-init ablation measures whether the pretrained blocks carry anything to the grid: LaMo − LaMo on a "
    f"random-init LM is {fmt(pre.interval.mean, 1, sign=True)} points, 95% interval [{fmt(pre.interval.low, 1, sign=True)}, "
    f"{fmt(pre.interval.high, 1, sign=True)}] (**{pre.verdict.value}**). ")
Markdown(
    "**Reading it.** The language side of LaMo is mechanical and shows: the auxiliary loss keeps the LM's held-out "
    f"arithmetic loss where it was ({fmt(m['lm_rise_lamo'], 3, sign=True)} nats), while LoRA's update for the grid "
    f"without it moves it by {fmt(m['lm_rise_lamo_lam0'], 2, sign=True)} nats on average. The RL side rests on what "
    "the pretrained blocks know, and the kit's LM learned to add two-digit numbers: nothing about sequences of "
    f"(return, coordinate, action) embeddings. {gap_pre}Every arm ends near or below the behaviour data "
    f"({fmt(m['behaviour_return'], 1)}) after {p.n_steps} steps, so with {p.n_seeds} seeds the intervals are wide. "
    "The paper's gain rests on GPT-2 pretrained on web text and 100k training steps; the standard preset adds more "
    "steps, 5 seeds and a data sweep (10, 50, 200 episodes) for the paper's Figure-1 curve."
)

# %% [markdown]
# ## Try it
#
# Change λ, the number of episodes, the noise, the LoRA rank and the context, then Train.

# %%
import widgets

widgets.explorer("lamo", metric="action_loss")

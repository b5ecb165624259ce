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
# # 09 · NetLLM — Adapting Large Language Models for Networking
#
# [arXiv 2402.02338](https://arxiv.org/abs/2402.02338) (Wu et al., ACM SIGCOMM 2024) ·
# [official code](https://github.com/duowuyms/NetLLM) · family: **adaptation**
#
# **What you will see:** a video-streaming simulator where a player picks one of six bitrates per 4-s chunk, the
# classic rules that do it (buffer-based BBA, rate-based, RobustMPC), and NetLLM: the kit's small pre-trained language
# model, frozen, given a multimodal encoder, a one-step networking head and LoRA, trained on an experience pool the
# rules collected. The claim check says, from the run, whether it beats the rules on test traces and on unseen ones.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
pool_episodes = None        # experience-pool episodes (one training trace each)
window = None               # context window w (steps of 8 tokens)
lora_r = None               # LoRA rank on the LM's fused q/k/v projections
train_steps = None          # DD-LRNA mini-batches
lr = None                   # AdamW learning rate
target_return_scale = None  # inference target return: scale × the largest return-to-go in the pool
no_pretrain = None          # also train the random-init-LM ablation
token_answer = None         # also train the ablation whose LM writes the bitrate as text

# %%
import inspect

import numpy as np
import torch
from IPython.display import Markdown, display

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.methods import netllm
from labkit.substrates import abr
from labkit.substrates.pretrained_lm import pretrained_lm

overrides = overrides_from(netllm.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# Networking research builds a new neural network for every task (Pensieve for bitrate adaptation, TRACK for viewport
# prediction, Decima for job scheduling). NetLLM reuses **one pre-trained language model** for all of them and adds
# three things around it:
#
# 1. a **multimodal encoder** that turns the task's inputs (time series, images, graphs) into vectors in the LM's
#    token-embedding space, so the LM reads them as if they were tokens;
# 2. a **networking head** that maps the LM's last hidden state straight to a valid answer in **one** forward pass,
#    instead of letting the LM write the answer as text token by token (slow, and it can write something invalid);
# 3. **DD-LRNA** (data-driven low-rank networking adaptation): the LM stays frozen, low-rank (LoRA) matrices, the
#    encoder and the head are trained on data. For a decision task like adaptive bitrate streaming (ABR) the data is
#    an offline **experience pool** that existing algorithms collected, and the LM learns a return-conditioned policy
#    like a Decision Transformer.
#
# For ABR, step $t$ is one video chunk. The sequence the LM reads has 8 tokens per step,
#
# $$x = \mathrm{LN}\big[e_R(\hat R_1),\ e_s^1(s_1),\dots,e_s^6(s_1),\ e_a(a_1),\ e_R(\hat R_2),\ \dots\big] + \text{time},$$
#
# where $s_t$ is Pensieve's state (last bitrate, buffer, past throughputs and download times, next chunk sizes,
# chunks left: six per-feature encoders, six tokens), $a_t$ the chosen level and $\hat R_t$ the return still to
# collect. The head reads the hidden state of each step's **last state token** (so $a_t$ cannot leak into its own
# prediction) and DD-LRNA minimises
#
# $$\tilde r_t = \frac{r_t - r_{\min}}{r_{\max} - r_{\min}},\qquad \hat R_t = \frac1{\rm scale}\sum_{t'\ge t}\tilde r_{t'},
# \qquad \mathcal L(\theta) = -\frac1{BT}\sum_{b,t}\log\mathrm{softmax}\big(\mathrm{head}(h_{b,t})\big)[a_{b,t}]$$
#
# over windows of $w$ steps from the pool, with only LoRA, the encoder, the embeddings and the head trainable. At
# inference the target return starts at the pool's largest $\hat R$ and drops by each obtained $\tilde r_t/{\rm scale}$.
#
# **labkit's stand-ins.** The paper uses Llama-2-7B; here the "LLM" is the kit's own tiny transformer
# (`labkit.substrates.pretrained_lm`: 2 layers, width 64, pre-trained on arithmetic strings, weights shipped with
# the kit), deep-copied before it is adapted. It has nothing to do with video streaming, exactly like Llama's text.
# A random-init copy of the same architecture is the "no pre-training" ablation.

# %% [markdown]
# ## The simulator, on a case you can check by hand
#
# A chunk of bitrate $R$ is $R\cdot 4$ s megabits; its download takes $d = S/c + 80$ ms on a constant throughput $c$;
# a stall is $\rho = \max(0, d - b)$ (not counted for the first chunk: that is the startup delay); the buffer becomes
# $\max(b - d, 0) + 4$ s (capped at 60 s); the QoE of the chunk is $q = R - 4.3\,\rho - |R - R_{\rm prev}|$ (Mbit/s).
# Three chunks at 2 Mbit/s with levels 0, 2, 5 (0.3, 1.2, 4.3 Mbit/s): downloads 0.68, 2.48 and 8.68 s; the last one
# outruns the 5.52-s buffer and stalls 3.16 s, so $q_3 = 4.3 - 4.3\cdot 3.16 - 3.1 = -12.388$.

# %% tags=["nbval-check-output"]
video3 = abr.Video(np.tile(np.array(abr.BITRATES_KBPS) / 1000 * 4, (3, 1)))
player = abr.Player(video3, abr.constant_traces([2.0]))
for level in (0, 2, 5):
    s = player.step([level])
    print(f"level {level}: download {s.download_s[0]:.2f} s, stall {s.rebuffer_s[0]:.2f} s, "
          f"buffer {s.buffer_s[0]:.2f} s, QoE {s.qoe[0]:+.3f}")

# %% [markdown]
# The three classic rules on hand cases. **BBA** maps the buffer to a level (reservoir 5 s, cushion 10 s):
# $\ell = \lfloor 5\,(b-5)/10\rfloor$ between 5 and 15 s. **Rate-based** takes the harmonic mean of the last 5
# measured throughputs and the highest bitrate below it. **RobustMPC** divides that estimate by $1 + $ its largest
# recent relative error, enumerates every plan for the next $h = 3$ chunks ($6^3 = 216$), simulates the buffer for
# each and keeps the first level of the best.

# %% tags=["nbval-check-output"]
print("BBA at buffers 0, 5, 10, 14.9, 15 s ->", abr.bba_level([0.0, 5.0, 10.0, 14.9, 15.0]).tolist())
est = abr.harmonic_mean(np.array([[1.0, 2.0, 4.0]]))
print(f"harmonic mean of 1, 2, 4 Mbit/s = {est[0]:.3f} -> rate-based level {abr.rate_level(est)[0]}")
plans = abr.all_plans(3)
scores = abr.plan_scores(np.array([8.0]), np.array([1]), np.array([1.5]), video3.sizes_mb, plans)
print(f"MPC, buffer 8 s, last level 1, estimate 1.5 Mbit/s: best of {len(plans)} plans = "
      f"{plans[scores.argmax()].tolist()} (score {scores.max():.3f})")

# %% [markdown]
# ## NetLLM's pieces
#
# The loss, and the returns-to-go that condition the policy. By hand: rewards $[1, -1, 3]$ with $r_{\min} = -1$,
# $r_{\max} = 3$ normalise to $[0.5, 0, 1]$, so $\hat R = [1.5, 1, 1]/{\rm scale}$; uniform logits over six
# bitrates give a loss of $\log 6 = 1.792$.

# %%
print(inspect.getsource(netllm.netllm_loss))
print(inspect.getsource(netllm.returns_to_go))

# %% tags=["nbval-check-output"]
print("R_hat with scale 1:", netllm.returns_to_go(np.array([[1.0, -1.0, 3.0]]), -1.0, 3.0, 1.0).tolist())
print(f"loss of uniform logits: {netllm.netllm_loss(torch.zeros(1, 4, 6), torch.tensor([[0, 1, 2, 3]])).item():.3f}")

# %% [markdown]
# The model: the encoder builds the 8-token steps, the frozen LM (with LoRA) runs its blocks on them
# (`run_backbone`), and the networking head reads the last state token of each step.

# %%
print(inspect.getsource(netllm.NetLLMPolicy.forward))
lm = pretrained_lm(progress=False)
print(f"backbone: TinyLM, {len(lm.blocks)} blocks, width {lm.d_model}; pre-trained on arithmetic strings")

# %% [markdown]
# ## The algorithm: DD-LRNA
#
# The whole loop: AdamW on the trainable parameters only, linear warm-up, gradient clipping at 0.25, windows of $w$
# steps drawn from the pool. Below it runs on a tiny pool (6 sessions of BBA and rate-based) for 20 steps: the
# frozen LM's weights do not move, the LoRA matrices do.

# %%
print(inspect.getsource(netllm.dd_lrna))

# %%
tiny_video = abr.make_video(np.random.default_rng(seed))
tiny_pool = abr.collect_pool({"bba": abr.BBA(), "rate": abr.RateBased()}, tiny_video,
                             abr.make_traces(np.random.default_rng(seed + 1), 6))
lo, hi = float(tiny_pool.rewards.min()), float(tiny_pool.rewards.max())
tiny_data = netllm.Trajectories(torch.as_tensor(tiny_pool.states), torch.as_tensor(tiny_pool.actions),
                                netllm.returns_to_go(tiny_pool.rewards, lo, hi, 10.0))
torch.manual_seed(seed)
tiny_policy = netllm.NetLLMPolicy(netllm.low_rank_backbone(lm, r=8, alpha=32, dropout=0.05), feature_dim=16)
frozen_before = tiny_policy.backbone.blocks[0].attn.qkv.base.weight.clone()
losses = netllm.dd_lrna(tiny_policy, tiny_data, steps=20, batch_size=8, window=3, lr=3e-3, weight_decay=1e-4,
                        warmup=5, clip=0.25, generator=torch.Generator().manual_seed(seed))
print(f"loss {losses[0]:.2f} -> {losses[-1]:.2f} over 20 steps; frozen qkv weight unchanged: "
      f"{torch.equal(frozen_before, tiny_policy.backbone.blocks[0].attn.qkv.base.weight)}; "
      f"|LoRA B| = {tiny_policy.backbone.blocks[0].attn.qkv.lora_B.abs().max().item():.3f} (0 at the start)")

# %% [markdown]
# ## The data: throughput traces and the experience pool
#
# Each seed draws a video and disjoint trace sets: training traces (one pool episode each), validation and test
# traces from the same distribution (a log-normal Markov walk with regime switches, mean 1–3 Mbit/s), and **unseen**
# traces with twice the variance of log-throughput (deeper dips, higher peaks). Six behaviour policies fill the
# pool: BBA, rate-based and RobustMPC, and each of them with 20% random actions.

# %%
p = netllm.Knobs(**resolve_params(netllm.PARAMS, preset, overrides))  # the values the run below will use
world = netllm.make_world(p, seed)
n_val = p.n_val
viz.lines(np.arange(200), {"a test trace": world.evaluation.mbps[n_val, :200],
                           "an unseen trace (2× variance)": world.evaluation.mbps[n_val + p.n_test, :200]},
          title="Throughput traces (first 200 s)", xlabel="time (s)", ylabel="Mbit/s")

# %% [markdown]
# ## Train NetLLM and the baselines

# %%
arms = ", ".join(a.label for a in netllm.experiment.learned_arms(p))
Markdown(f"Per seed: an experience pool of {p.pool_episodes} episodes × 48 chunks; then {arms} trained on it. "
         f"NetLLM: {p.train_steps} DD-LRNA steps of {p.batch_size} windows of $w = {p.window}$ steps, AdamW lr "
         f"{p.lr:g}, LoRA $r = {p.lora_r}$, $\\alpha = {p.lora_alpha:g}$. The MLP from scratch (Pensieve's state → 64 → "
         f"64 → 6): {p.scratch_steps} steps of 256 (state, action) pairs. Every policy plays the same {p.n_val} "
         f"validation, {p.n_test} test and {p.n_unseen} unseen traces; {p.n_seeds} seeds. Decisions are the argmax "
         "of the head (the official code samples from its softmax).")

# %%
result = netllm.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **QoE per policy**, mean over seeds with 95% intervals, on test traces (the training distribution) and unseen
# traces (twice the variance).

# %%
result.figures["qoe"]

# %% [markdown]
# **Where the QoE comes from**: the bitrate term, minus the stall and smoothness penalties.

# %%
result.figures["qoe_terms"]

# %% [markdown]
# **One session**, NetLLM against BBA on the same test trace: the bitrate each picks and the buffer it keeps.

# %%
result.figures["episode"]

# %% [markdown]
# **Training**: the cross-entropy of each learned arm on the pool's actions.

# %%
result.figures["loss"]

# %%
result.figures["parameters"]

# %% [markdown]
# ## The claim check
#
# Each claim compares one number per seed (each seed a new video, traces and pool) with a margin fixed in the code
# before the run: **holds** when the 95% interval over seeds is on the claimed side, **does not hold** when it is on
# the other side, **inconclusive** when it straddles. The best classic rule of each seed is picked on its validation
# traces, never on the test traces.
#
# - **Headline** (the paper: +14.5–36.6% QoE over the best ABR algorithms): NetLLM − best rule on test traces, margin 0.
# - NetLLM − best rule on unseen traces (the paper: it generalises), margin 0.
# - The card's toy claims: NetLLM ≥ the mean of its pool's behaviour policies; NetLLM ≥ rate-based − 0.05.
# - NetLLM − a small MLP learned from scratch on the same pool, on unseen traces, margin 0; and, when the ablation
#   runs, NetLLM − the same recipe on a random-init LM.

# %%
for c in result.claims:
    print(c)

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(f"{c.verdict.value:>13} | {c.claim}")

# %%
m, head = result.metrics, result.claims[0]
outs = result.extras["outcomes"]
best = ", ".join(o.best_rule for o in outs)
wins = sum(o.scores["netllm"].test.mean() > o.scores[o.best_rule].test.mean() for o in outs)
labels_seen = p.train_steps * p.batch_size * p.window
loss = result.history[result.history["series"] == netllm.NETLLM.label].groupby("step")["value"].mean()
half = loss[loss.index <= loss.index[-1] // 2]
std = resolve_params(netllm.PARAMS, "standard")
Markdown(
    f"**What showed at the {result.preset} preset** (read from this run). Headline, NetLLM beats the best classic rule "
    f"on test traces: **{head.verdict.value}** (NetLLM {fmt(m['qoe_test_netllm'], 2)} vs best rule "
    f"{fmt(m['qoe_test_best_rule'], 2)} QoE per chunk; gap {fmt(head.interval.mean, 2, sign=True)}, 95% interval "
    f"[{fmt(head.interval.low, 2, sign=True)}, {fmt(head.interval.high, 2, sign=True)}]; NetLLM ahead in {wins} of "
    f"{len(outs)} seeds; best rule on validation: {best}). On unseen traces: NetLLM {fmt(m['qoe_unseen_netllm'], 2)}, "
    f"best rule {fmt(m['qoe_unseen_best_rule'], 2)}, MLP from scratch {fmt(m['qoe_unseen_scratch'], 2)}. "
    f"The pool's six behaviour policies average {fmt(m['qoe_test_pool'], 2)} on test traces (NetLLM at least that: "
    f"**{result.claims[2].verdict.value}**); the MLP from scratch reaches {fmt(m['qoe_test_scratch'], 2)}. "
    f"NetLLM trains {int(m['trainable_netllm']):,} of its {int(m['total_params_netllm']):,} parameters and answers in "
    f"{m['forwards_per_chunk_netllm']:.0f} forward pass per chunk, always with a valid bitrate.\n\n"
    f"**{'Caveats' if head.holds else 'Why the headline does not show here'}.** (1) The pool holds only the three rules and noisy copies of them: "
    f"NetLLM imitates a mixture of BBA, rate-based and RobustMPC (half of it with 20% random actions), conditioned on "
    f"a high return; offline imitation can pick the best behaviour out of the mixture, but has little room to exceed it. The paper's "
    f"pool also held Pensieve/GENET (reinforcement-learned policies), and its backbone was Llama-2-7B. (2) Training "
    f"is short: in {p.train_steps} steps NetLLM saw {labels_seen:,} action labels, {labels_seen / m['pool_steps']:.1f} "
    f"passes over the pool of {int(m['pool_steps']):,} steps (the MLP: {p.scratch_steps * 256 / m['pool_steps']:.0f} "
    f"passes: each of its steps costs far less), and its loss was still moving: {fmt(half.iloc[-1], 2)} at step "
    f"{half.index[-1]}, {fmt(loss.iloc[-1], 2)} at step {loss.index[-1]}. The standard preset trains "
    f"{std['train_steps']:,} steps on a pool of {std['pool_episodes']} episodes, with both ablations and the return sweep."
)

# %% [markdown]
# **The ablations** (on at the standard preset: `no_pretrain=True`, `token_answer=True`). The random-init LM gets
# the same encoder, LoRA and head; the token-answer variant drops the networking head and lets the LM write the
# level as a digit and ";" with its own (frozen) LM head, which costs two forward passes per chunk and can write
# something that is not a bitrate.

# %%
rows = [("NetLLM", "netllm")] + [(a.label, a.key) for a in result.extras["arms"][1:-1]]
lines = [f"{label:32s} test {fmt(m[f'qoe_test_{k}'], 2)}  unseen {fmt(m[f'qoe_unseen_{k}'], 2)}" for label, k in rows]
if "invalid_rate_token_answer" in m:
    lines.append(f"token answer: {m['forwards_per_chunk_token_answer']:.0f} forward passes per chunk, "
                 f"{m['invalid_rate_token_answer']:.1%} invalid answers")
if len(rows) == 1:
    lines.append("(no ablation ran at this preset: set no_pretrain=True and/or token_answer=True)")
print("\n".join(lines))
if "return_sweep" in result.figures:
    display(result.figures["return_sweep"])

# %% [markdown]
# What this toy does **not** show: the paper's scale (a 7B LLM, real FCC/Norway/Starlink traces, a pool with
# learned policies) and its other two tasks (viewport prediction, cluster job scheduling). Evaluation here takes the
# argmax of the head; the official code samples from the softmax, and keeps the epoch with the best return on its
# test traces, which labkit does not do.

# %% [markdown]
# ## Try it
#
# Change the pool size, the context window, the LoRA rank, the number of DD-LRNA steps or the target return, then
# Train. The plot shows each learned arm's training loss while it trains.

# %%
import widgets

widgets.explorer("netllm", metric="train_loss")

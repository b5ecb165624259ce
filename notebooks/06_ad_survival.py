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
# # 06 · Ad survival — Ad Creative Discontinuation Prediction with Multi-Modal Multi-Task Neural Survival Networks
#
# [arXiv 2204.11588](https://arxiv.org/abs/2204.11588) (Applied Sciences 2022) · family: **retrieval-recsys-applied**
#
# **What you will see:** synthetic ad creatives (text, advertiser, image-like pixels, numbers) that operators stop
# either early (cut-out) or after they wear out, many still running when the data are collected (censored). A
# multi-modal network with a discrete-time hazard loss, short- and long-term heads and CTR weighting, scored by the
# concordance index against a censoring-blind regression, one hazard head, a linear Cox model and an oracle.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
ctr_power = None     # CTR-weight strength γ: w ∝ (CTR / mean CTR)^γ
short_days = None    # short-head horizon L_s (days)
window = None        # collection window (days): observation ends then
launch_shift = None  # censoring that depends on the advertiser (0: independent of the features)
n_ads = None         # creatives per seed

# %%
import inspect

import numpy as np
import torch
from IPython.display import Markdown

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.data import ads as ads_data
from labkit.methods import ad_survival as ad

overrides = overrides_from(ad.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# A creative $i$ runs from its launch until an operator stops it. We see $(T_i, \delta_i)$: the stop day $T_i$ with
# $\delta_i = 1$, or, for a creative still running when the data were collected, the last day seen with
# $\delta_i = 0$ (**censored**: we only know it lasted *at least* $T_i$ days). Time is split into bins
# $l = 1..L$ and the network predicts, per creative, the **hazard** of each bin
#
# $$h_l(x) = \sigma(f_l(x)) = P(\text{stopped in bin } l \mid \text{running at its start}),\qquad
#   S(l) = \prod_{j\le l} (1 - h_j),\qquad p(l) = h_l \prod_{j<l}(1-h_j).$$
#
# The loss is the likelihood of what was seen: a stop in bin $T_i$, or survival through bin $T_i$,
#
# $$\ell_i = -\big[\delta_i \log p(T_i) + (1-\delta_i)\log S(T_i)\big],$$
#
# computed in log space ($\log S = \sum \log(1 - h)$, $h$ clamped to $[10^{-6}, 1 - 10^{-6}]$).
# The paper adds two things on top of a shared multi-modal encoder:
#
# - **two-term estimation**: a short head over daily bins $1..L_s$ (cut-outs) and a long head over weekly bins
#   (wear-out), trained jointly; each creative's $(T, \delta)$ is clipped to each head's horizon (one that stops
#   after $L_s$ is censored at $L_s$ for the short head);
# - **CTR weighting**: $\mathcal L = \frac1N\sum_i w_i(\ell^{\rm short}_i + \ell^{\rm long}_i)$ with
#   $w_i \propto ({\rm CTR}_i / \overline{\rm CTR})^\gamma$ (normalised to mean 1), so that the creatives that bring
#   the clicks count more.
#
# **Inferred, not from the paper:** only the abstract was retrievable and there is no official code. The
# discrete-time likelihood (as in DRSA and pycox's `LogisticHazard`), the heads' horizons, the clipping and the
# weight formula $w \propto {\rm CTR}^\gamma$ are the card's reading. The risk score is minus the restricted mean
# survival time $\sum_d S(d)$; "long term" is scored on the creatives still running after $L_s$.

# %% [markdown]
# ## The loss, and a case you can check by hand

# %%
print(inspect.getsource(ad.hazard_nll))
print(inspect.getsource(ad.two_term_loss))

# %% [markdown]
# Three bins with hazards $h = (0.2, 0.5, 0.1)$. A creative stopped in bin 2 has likelihood
# $(1 - 0.2)\cdot 0.5 = 0.4$, so $\ell = -\log 0.4 \approx 0.916$; one censored after bin 3 survived all three,
# $S(3) = 0.8\cdot0.5\cdot0.9 = 0.36$, so $\ell = -\log 0.36 \approx 1.022$. A creative seen for less than one
# weekly bin (index $-1$) adds nothing to the long head.

# %% tags=["nbval-check-output"]
logits = torch.logit(torch.tensor([[0.2, 0.5, 0.1]] * 3))
loss = ad.hazard_nll(logits, torch.tensor([1, 2, -1]), torch.tensor([True, False, False]))
print("loss per creative:", [fmt(v, 3) for v in loss.tolist()], " (hand: 0.916, 1.022, 0.000)")
index, event = ad.discretize(torch.tensor([3, 20, 5]), torch.tensor([True, True, False]), 1, 14)
print("short head (daily, L_s = 14): index", index.tolist(), "event", event.tolist())
index, event = ad.discretize(torch.tensor([3, 20, 5]), torch.tensor([True, True, False]), 7, 12)
print("long head (weekly): index", index.tolist(), "event", event.tolist())

# %% [markdown]
# ## The concordance index
#
# Harrell's $C$: over the **comparable** pairs, those where creative $i$ stopped ($\delta_i = 1$) before $j$ was last
# seen ($T_i < T_j$, or the same day with $j$ censored), the share where the model calls $i$ riskier (ties ½).
# 0.5 is chance (Kaplan–Meier, no features, scores 0.5), 1 is a perfect order. The tests check this function
# against `lifelines.utils.concordance_index` on data with tied times, tied scores and censoring (lifelines
# wants scores that are larger for *longer* survival, so it gets $-$risk).

# %%
print(inspect.getsource(ad.concordance_index))

# %% tags=["nbval-check-output"]
time_ = torch.tensor([1.0, 2.0, 2.0, 3.0])
event_ = torch.tensor([True, True, False, False])
risk_ = torch.tensor([4.0, 3.0, 3.0, 1.0])
# comparable: (0,1), (0,2), (0,3), (1,2) [same day, 2 censored], (1,3); all concordant but (1,2), a tie → 4.5 / 5
print("C =", fmt(ad.concordance_index(time_, risk_, event_), 3), " (hand: 4.5 / 5 = 0.900)")

# %% [markdown]
# ## The network and the training loop
#
# Per-modality encoders (16 each: mean of token embeddings, an advertiser embedding, linear maps of the 64 pixels and
# the 2 numbers) → concatenation → MLP(64) → one linear head per output. The loop is plain Adam over shuffled
# mini-batches; the experiment keeps the epoch with the best **validation** c-index.

# %%
print(inspect.getsource(ad.train_network))

# %% [markdown]
# ## The data: synthetic creatives
#
# Each creative has a hidden quality $q \sim \mathcal N(0,1)$, seen only through noisy features: CTR
# $= \sigma(-4 + 0.8q + \text{noise})$, 12 tokens out of 200 (10 "bad" tokens are drawn more by low-$q$ creatives,
# 20 "fatiguing" ones speed wear-out), an advertiser id (50, each with its own wear-out speed), 8×8 pixels whose
# brightness encodes $q$, a bid (correlated with $q$) and a budget. The 30% worst-looking creatives are **cut out**
# (hazard 0.3 per day in days 1–7); all **wear out** with hazard $\sigma(-6 + {\rm fatigue}\cdot l)$. Launch days
# are uniform over the window; observation ends at its end, so a creative launched late is censored early. The launch
# day is *not* a feature (it would leak the censoring).

# %% tags=["nbval-check-output"]
p = ad.Knobs(**resolve_params(ad.PARAMS, preset, overrides))  # the values the run below will use
data = ads_data.make_ads(p.n_ads, seed, window=p.window, launch_shift=p.launch_shift)
cut = data.mechanism == 0
print(f"{p.n_ads} creatives, window {p.window} days: censored {fmt(data.censored_share, 2)}, "
      f"cut-out {fmt(cut.float().mean(), 2)}, median CTR {fmt(100 * data.ctr.median(), 1)}%")
print(f"median true stop day: cut-out {int(data.true_time[cut].median())}, wear-out {int(data.true_time[~cut].median())}")

# %%
fig = viz.lines([], {}, title="Observed days per creative: stopped (events) and still running (censored)",
                xlabel="days seen", ylabel="creatives")
for name, sel in [("cut-out, stopped", cut & data.event), ("wear-out, stopped", ~cut & data.event),
                  ("censored", ~data.event)]:
    fig.add_histogram(x=data.time[sel].numpy(), name=name, xbins={"size": 2}, opacity=0.7)
fig.update_layout(barmode="overlay")
fig

# %% [markdown]
# ## Train the arms
#
# Every arm sees the same creatives per seed (train / validation / test = 60 / 20 / 20%); each network keeps the
# epoch with the best validation c-index, and every number below is on the test split.
#
# - **two-term + CTR** (the paper): short head (daily, $L_s$ days) + long head (weekly), CTR weights;
# - **two-term, no CTR weight** and **one hazard head + CTR** (daily bins over the whole horizon): ablations;
# - **conventional**: the same encoder regressing $\log T$ with MSE, censored creatives treated as stopped;
# - **linear Cox** on the flattened features (tokens counted, advertiser one-hot), partial likelihood;
# - **oracle**: the generator's true survival curves; the best any model could do on these data.

# %%
result = ad.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **Survival curves.** Kaplan–Meier estimates on the first seed's test creatives (solid), per mechanism, against the
# mean predicted $S(d)$ of the hazard models (dashed: two-term, stitched at $L_s$; dotted: one head).

# %%
result.figures["survival"]

# %% [markdown]
# **Hazards of a few creatives** from the two-term model: the short head (solid, per day) and the long head
# (dashed, per week converted to a per-day rate). Cut-outs get a high early hazard; wear-outs a rising one.

# %%
result.figures["hazards"]

# %% [markdown]
# **c-index per arm** (overall; dots are seeds) and split into short term, long term and overall.

# %%
result.figures["c_overall"]

# %%
result.figures["c_by_term"]

# %% [markdown]
# **CTR weighting**: c-index within each CTR quartile, with and without the weights.

# %%
result.figures["c_by_ctr"]

# %%
result.figures["val_c"]

# %%
rows = [(o.arm.label, *(np.mean(v) for v in (o.c_short, o.c_long, o.c_overall, o.c_top_ctr))) for o in result.extras["arms"]]
print(f"{'arm':32s} {'short':>7s} {'long':>7s} {'overall':>8s} {'top CTR':>8s}   (test c-index, mean over seeds)")
for r in rows:
    print(f"{r[0]:32s} {r[1]:7.3f} {r[2]:7.3f} {r[3]:8.3f} {r[4]:8.3f}")

# %% [markdown]
# ## The claim check
#
# One number per seed (a new set of creatives each), margins fixed in the code before the run, a three-way verdict
# from the 95% t-interval over seeds.
#
# - **Headline** (the paper: 0.792 overall vs 0.531 for "the conventional method"; the card's toy margin): the
#   two-term model's overall c-index minus the censoring-blind regression's is at least **0.05**.
# - Supporting: the two-term model reaches 0.70 overall (the card's bar); two-term beats one hazard head; CTR
#   weighting raises the c-index in the top CTR quartile.

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)

# %%
m = result.metrics
head, absolute, two_term, ctr = result.claims
room = m["c_overall_oracle"] - m["c_overall_mse"]
than = lambda a, b: "above" if a > b else "below"  # noqa: E731
why = ("Why it does not show here" if head.verdict.value != "holds" else "What drives it")
Markdown(
    f"**What showed at the {result.preset} preset** (read from this run). Headline, two-term + CTR beats the "
    f"censoring-blind regression by ≥ {head.margin:g} overall: **{head.verdict.value}** (gap "
    f"{fmt(head.interval.mean, 3, sign=True)}, 95% interval [{fmt(head.interval.low, 3, sign=True)}, "
    f"{fmt(head.interval.high, 3, sign=True)}] over {head.interval.n} seeds). The two-term model reaches "
    f"{fmt(m['c_overall_two_term'], 3)} overall (≥ 0.70: **{absolute.verdict.value}**), the regression "
    f"{fmt(m['c_overall_mse'], 3)}, the linear Cox model {fmt(m['c_overall_cox'], 3)}, the oracle "
    f"{fmt(m['c_overall_oracle'], 3)}.\n\n"
    f"**{why}.** The overall c-index is dominated by the cut-outs: {m['short_pair_share']:.0%} of its comparable "
    f"pairs have the earlier creative stopped within {p.short_days} days, and any model that spots a cut-out wins "
    f"those pairs (short-term c-index: two-term {fmt(m['c_short_two_term'], 3)}, regression "
    f"{fmt(m['c_short_mse'], 3)}). With `launch_shift` = {p.launch_shift:g} censoring "
    + ("is independent of the features (the launch day is random), so $\\log\\min(T, C)$, what the regression fits, "
       "still orders creatives much like $T$ does: ignoring censoring biases its durations more than its ranking. "
       if p.launch_shift == 0 else "depends on the advertiser. ")
    + f"The ranking is harder in the **long term** (creatives running after {p.short_days} days): two-term "
    f"{fmt(m['c_long_two_term'], 3)}, {than(m['c_long_two_term'], m['c_long_mse'])} the regression's "
    f"{fmt(m['c_long_mse'], 3)}; and in the **top CTR quartile**: {fmt(m['c_top_ctr_two_term'], 3)}, "
    f"{than(m['c_top_ctr_two_term'], m['c_top_ctr_mse'])} the regression's {fmt(m['c_top_ctr_mse'], 3)}. "
    f"The oracle is {fmt(room, 3)} above the regression overall: the features carry more than any arm extracts "
    f"at this size (validation picked epochs {', '.join(str(e) for e in result.extras['arms'][0].best_epoch)} of "
    f"{p.epochs} for the two-term model).\n\n"
    f"Two-term vs one hazard head, overall: {fmt(m['c_overall_two_term'], 3)} vs {fmt(m['c_overall_single'], 3)} "
    f"(**{two_term.verdict.value}**). CTR weighting, top CTR quartile: {fmt(m['c_top_ctr_two_term'], 3)} with vs "
    f"{fmt(m['c_top_ctr_two_term_plain'], 3)} without (**{ctr.verdict.value}**); overall "
    f"{fmt(m['c_overall_two_term'], 3)} vs {fmt(m['c_overall_two_term_plain'], 3)}."
)

# %% [markdown]
# What this toy does **not** show: the paper's numbers come from a production data set (a million creatives, about
# ten billion impressions) with real images and text, and its "conventional method" (0.531) is not described in the
# abstract; the card's stand-in is a censoring-blind regression on the same encoder, a much stronger baseline than
# 0.531 suggests. The GRU text encoder of the standard preset and the CNN on 32×32 thumbnails of the full preset are
# not run here. Set `launch_shift` > 0 to make censoring depend on the advertiser (late-joining advertisers' creatives
# are all censored early), the situation in which ignoring censoring should hurt a ranking most.
#
# While building this notebook the headline gap was also measured with 5× the creatives (the standard preset's
# 30,000, with and without the GRU text encoder), with longer training (40 epochs, or a 3× larger learning rate)
# and with feature-dependent censoring (`launch_shift` = 0.8): the overall gap stayed well under the 0.05 margin in
# every case, while the long-term gap stayed large. Run the standard preset to see it for yourself.

# %% [markdown]
# ## Try it
#
# Change the CTR-weight strength, the short horizon $L_s$, the collection window (more or less censoring) and the
# feature-dependent censoring, then Train. The plot shows each arm's validation c-index per epoch.

# %%
import widgets

widgets.explorer("ad_survival", metric="val_c_overall")

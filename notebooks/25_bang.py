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
# # 25 · BANG — Spurious Feature Diversification Improves Out-of-distribution Generalization
#
# [arXiv 2309.17230](https://arxiv.org/abs/2309.17230) (ICLR 2024) · no official code found; WiSE-FT's reference
# code: [mlfoundations/wise-ft](https://github.com/mlfoundations/wise-ft) · family: **federated-robustness**
#
# **What you will see:** on coloured digits whose colour patches are spuriously tied to the label, averaging the
# *weights* of a pre-trained and a fine-tuned model (WiSE-FT) beats both of them out of distribution; the
# fine-tuned model is far more confident than the pre-trained one, and fine-tuning with label smoothing + MixUp
# (BANG) takes that away. BANG's accuracy *gain* over WiSE-FT does **not** show in this toy; the notebook prints by
# how much it misses.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
alpha = None            # weight of the fine-tuned model in the average
label_smoothing = None  # BANG's epsilon
mixup_a = None          # BANG's MixUp: lambda drawn from Beta(a, a)
pre_a = None            # pre-training data: how often a group-A patch shows the label's colour
ft_b = None             # fine-tuning data: how often a group-B patch shows the label's colour
ood_a = None            # OOD test: group A right this often
ood_b = None            # OOD test: group B right this often
ood_b_wrong = None      # OOD test: group B consistently wrong this often

# %%
import inspect
from types import SimpleNamespace

import numpy as np
import pandas as pd
import plotly.express as px
import torch

import widgets
from labkit import viz
from labkit.core import overrides_from, resolve_params
from labkit.data import colored_digits as cd
from labkit.methods import bang

overrides = overrides_from(bang.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# Fine-tune a pre-trained model $\theta_0$ on in-distribution (ID) data to $\theta_{\rm ft}$. **WiSE-FT** averages
# their weights, every parameter including the head and the biases:
#
# $$\theta_\alpha = (1-\alpha)\,\theta_0 + \alpha\,\theta_{\rm ft}, \qquad \hat y = \arg\max_c f_{\theta_\alpha}(x)_c .$$
#
# The baseline **output-space ensemble** (OSE) averages predictions instead:
# $\hat y = \arg\max_c\,[(1-\alpha)\,\mathrm{softmax} f_{\theta_0}(x) + \alpha\,\mathrm{softmax} f_{\theta_{\rm ft}}(x)]_c$.
#
# Why does the weight average do well out of distribution (OOD)? The paper's answer is **spurious feature
# diversification**: $\theta_0$ and $\theta_{\rm ft}$ rely on *different* spurious features; the average uses more of
# them, each with a smaller weight, so when some break OOD no single one can flip the prediction. A symptom is the
# **FalseFalseTrue** rate, the share of OOD samples that both models get wrong and the average gets right:
#
# $$\mathrm{FFT} = \tfrac1N \textstyle\sum_n \mathbb 1[\theta_0 \text{ wrong}]\;\mathbb 1[\theta_{\rm ft}\text{ wrong}]\;\mathbb 1[\theta_\alpha \text{ right}] .$$
#
# The fine-tuned model is **over-confident** (larger logits), so it dominates the average and spoils the balance.
# **BANG** (BAlaNced averaGing) fine-tunes with a loss that tempers confidence, then averages as WiSE-FT does.
# MixUp: $\lambda \sim \mathrm{Beta}(a, a)$, partner $j$ a random permutation of the batch,
# $\tilde x_i = \lambda x_i + (1-\lambda) x_j$, $\tilde t_i = \lambda t_i + (1-\lambda) t_j$; label smoothing:
# $t = (1-\varepsilon)\,\mathrm{onehot}(y) + \varepsilon / C$; loss: soft cross-entropy
# $-\frac1B \sum_b \sum_c \tilde t_{bc} \log \mathrm{softmax}(f(\tilde x_b))_c$.
#
# Calibration is measured by the **expected calibration error** over 15 equal-width confidence bins,
# $\mathrm{ECE} = \sum_b \frac{n_b}{N}\,\lvert \mathrm{acc}_b - \mathrm{conf}_b \rvert$ with $\mathrm{conf} = \max_c p_c$.

# %% [markdown]
# ## The core functions, and cases you can check by hand

# %%
for fn in (bang.interpolate_weights, bang.output_ensemble, bang.bang_loss, bang.expected_calibration_error):
    print(inspect.getsource(fn))

# %% [markdown]
# * Weights $(1, 2)$ and $(3, 6)$ at $\alpha = 0.25$: $0.75\cdot(1, 2) + 0.25\cdot(3, 6) = (1.5, 3.0)$.
# * OSE of logits $(0, 0)$ [softmax $(0.5, 0.5)$] and $(\ln 3, 0)$ [softmax $(0.75, 0.25)$] at $\alpha = 0.5$: $(0.625, 0.375)$.
# * BANG targets for labels 0 and 1 ($C = 4$, $\varepsilon = 0.1$): $(0.925, 0.025, 0.025, 0.025)$ and
#   $(0.025, 0.925, 0.025, 0.025)$; mixed with $\lambda = 0.75$, partner = the other sample: the first becomes
#   $0.75\cdot 0.925 + 0.25 \cdot 0.025 = 0.7$ on class 0 and $0.25$ on class 1.
# * ECE with 10 bins of four predictions: confidences 0.90 (right) and 0.95 (wrong) share bin 9, accuracy 0.5 at
#   mean confidence 0.925; 0.60 (right) in bin 6; 0.40 (wrong) in bin 4:
#   $\frac24 \cdot 0.425 + \frac14 \cdot 0.4 + \frac14 \cdot 0.4 = 0.4125$.

# %% tags=["nbval-check-output"]
mid = bang.interpolate_weights({"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}, 0.25)
print("theta_0.25 =", mid["w"].tolist())
ose = bang.output_ensemble(torch.tensor([[0.0, 0.0]]), torch.tensor([[np.log(3.0), 0.0]]), 0.5)
print("OSE probabilities =", [round(v, 3) for v in ose[0].tolist()])
targets = bang.smooth_targets(torch.tensor([0, 1]), 4, 0.1)
_, mixed = bang.mixup(torch.zeros(2, 1), targets, 0.75, torch.tensor([1, 0]))
print("smoothed then mixed targets:", [[round(v, 3) for v in row] for row in mixed.tolist()])
probs = torch.tensor([[0.9, 0.05, 0.05], [0.95, 0.05, 0.0], [0.2, 0.6, 0.2], [0.4, 0.3, 0.3]])
print(f"ECE = {bang.expected_calibration_error(probs, torch.tensor([0, 1, 1, 2]), n_bins=10):.4f}  (hand: 0.4125)")

# %% [markdown]
# ## The data: MultiColorDigits
#
# scikit-learn's 1,797 digits (8×8), built here (nothing is downloaded). Each sample has
#
# * a weak **invariant** feature: the image average-pooled to 4×4 plus Gaussian noise with σ = 0.8;
# * 12 **colour patches** (one-hot over 10 colours). Patch $j$ has its own random label→colour map; with some
#   probability it shows the label's colour, otherwise a random colour. Group A = patches 0–5, group B = 6–11.
#
# | split | images | group A shows the label's colour | group B |
# |---|---|---|---|
# | pre-training ($\theta_0$) | 600 | $p = 0.8$ | $p = 0.1$ |
# | fine-tuning = ID ($\theta_{\rm ft}$) | 600 | $p = 0.1$ | $p = 0.9$ |
# | OOD test | the other 597 | $p = 0.4$ | $p = 0.3$, and a *consistently wrong* colour (a second map per patch) w.p. 0.3 |
#
# "Random" colours can hit the label's colour by chance (1 in 10), so the measured shares below are a little higher.
# The **ID test** is the same 597 held-out images with the fine-tuning rule (fresh noise and colours); it is used
# for ID accuracy and for choosing $\alpha$ on ID data. The pictures show what a model sees: the noisy 4×4
# feature in the middle (upsampled) and the patches around it (the full preset's CNN sees exactly these images; the
# MLP sees the same numbers as a 136-long vector).

# %% tags=["nbval-check-output"]
p = resolve_params(bang.PARAMS, preset, overrides)  # the values the run below will use
splits = bang.make_data(SimpleNamespace(**p), seed, "cpu").raw  # the first seed's data, as the run builds it
half = p["n_patches"] // 2
rows = []
for name, s in splits.items():
    right, wrong = cd.colour_agreement(s)
    rows.append({"split": name, "n": len(s), "A: label colour": right[:half].mean(),
                 "B: label colour": right[half:].mean(), "B: wrong colour": wrong[half:].mean()})
print(pd.DataFrame(rows).round(3).to_string(index=False))

# %%
show = {"pre-train": splits["pretrain"], "fine-tune (ID)": splits["finetune"], "OOD": splits["ood"]}
pictures = np.concatenate([cd.render(s, clip=True)[:4] for s in show.values()]).transpose(0, 2, 3, 1)
fig = px.imshow((255 * pictures).astype(np.uint8), facet_col=0, facet_col_wrap=4, height=620,
                title="Four samples per split: the noisy 4×4 digit and 12 colour patches (A: top row and left)")
labels = [f"{name}: label {y}" for name, s in show.items() for y in s.y[:4]]
fig.for_each_annotation(lambda a: a.update(text=labels[int(a.text.split("=")[1])]))
fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
fig

# %% [markdown]
# ## Train θ_0, θ_ft and the BANG fine-tune θ_ft^B
#
# Per seed (3 at the quick preset): an MLP 136 → 64 → 10 is pre-trained on the pre-training split (15 epochs, AdamW
# lr $10^{-3}$, weight decay $10^{-3}$, batch 64) to $\theta_0$; two copies of $\theta_0$ are fine-tuned on the ID split
# for 100 epochs without weight decay, on the same batches: plain cross-entropy → $\theta_{\rm ft}$, and label
# smoothing ($\varepsilon = 0.1$) + MixUp ($a = 0.4$) → $\theta_{\rm ft}^B$. Then WiSE-FT ($\theta_0 \leftrightarrow
# \theta_{\rm ft}$), BANG ($\theta_0 \leftrightarrow \theta_{\rm ft}^B$) and OSE are evaluated for $\alpha \in \{0, 0.1,
# \dots, 1\}$ on the ID and the OOD test.

# %%
result = bang.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **While training.** The OOD accuracy of the fine-tuned models (from epoch 16 on) against $\theta_0$'s; ID accuracy
# below it. Fine-tuning fits the ID colours (group B) and reaches ID accuracy near 1.

# %%
result.figures["training"]

# %%
result.figures["training_id"]

# %% [markdown]
# **Along the interpolation path.** The classic WiSE-FT curve: OOD accuracy is highest in the *middle*, above both
# ends ($\alpha = 0$ is $\theta_0$, $\alpha = 1$ the fine-tuned model), while ID accuracy is already near its maximum
# by $\alpha \approx 0.4$. BANG's path ends at $\theta_{\rm ft}^B$, which is much worse OOD on its own.

# %%
result.figures["ood_path"]

# %%
result.figures["id_path"]

# %% [markdown]
# **Confidence and calibration along the path.** WiSE-FT's confidence climbs towards the over-confident
# $\theta_{\rm ft}$; BANG's falls towards the tempered $\theta_{\rm ft}^B$.

# %%
result.figures["confidence_path"]

# %%
result.figures["ece_path"]

# %% [markdown]
# **Reliability on OOD data.** A calibrated model sits on the diagonal. Compare where each model's samples
# lie (histogram) with how accurate each confidence bin is.

# %%
result.figures["reliability"]

# %%
result.figures["confidence_hist"]

# %% [markdown]
# **Who gets what right.** The 2×2 table of $\theta_0$ against $\theta_{\rm ft}$ on the OOD test (summed over seeds),
# and how many of each cell WiSE-FT gets right. The bottom row, both wrong, is where FalseFalseTrue lives.

# %% tags=["nbval-check-output"]
table = result.extras["agreement"].groupby(["θ_0", "θ_ft"], sort=False)[["n", "θ_α right"]].sum()
table["share fixed or kept"] = (table["θ_α right"] / table["n"]).round(3)
print(table.to_string())
print(f"\nFalseFalseTrue rate (mean over seeds): {result.metrics['fft_rate']:.3f}")

# %%
result.figures["agreement"]

# %%
result.figures["fft_per_class"]

# %% [markdown]
# **Diversification in the weights.** The share of the first layer's squared weights on the invariant feature and
# on each patch group: $\theta_0$ leans on group A, $\theta_{\rm ft}$ on group B, and the averages spread their
# weight over both.

# %%
result.figures["weight_mass"]

# %% [markdown]
# **Choosing α on ID data.** Per seed, the $\alpha$ of the grid with the best ID test accuracy (ties go to the smaller
# $\alpha$), and the OOD accuracy it then gets. ID accuracy saturates, so the choice lands at the first $\alpha$
# that reaches it, which is not where OOD accuracy peaks.

# %% tags=["nbval-check-output"]
chosen = result.extras["chosen_alpha"].groupby("arm", sort=False)[["alpha", "id_acc", "ood_acc"]].mean()
print(chosen.round(3).to_string())

# %% [markdown]
# ## The claim check
#
# The card's claims at teaching scale, from the run above (means over the seeds):
# (1) WiSE-FT($\alpha = 0.5$) OOD accuracy ≥ max($\theta_0$, $\theta_{\rm ft}$) + 1.5 points;
# (2) the OOD mean max-probability of $\theta_{\rm ft}$ is ≥ that of $\theta_0$ + 0.15, and that of
# $\theta_{\rm ft}^B$ ≤ that of $\theta_{\rm ft}$ − 0.2;
# (3) BANG($\alpha = 0.5$) OOD accuracy ≥ WiSE-FT($\alpha = 0.5$) − 1.0 point (non-inferiority only).
# Reported, not asserted: the paper's BANG > WiSE-FT gain, and the ECE of the three models.

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)
m = result.metrics
print(f"\nOOD accuracy: theta_0 {m['ood_acc_pre']:.3f}, theta_ft {m['ood_acc_ft']:.3f}, theta_ft^B {m['ood_acc_ftB']:.3f}"
      f" | WiSE-FT {m['ood_acc_wise']:.3f}, BANG {m['ood_acc_bang']:.3f}, OSE {m['ood_acc_ose']:.3f}")
print(f"OOD ECE: theta_0 {m['ood_ece_pre']:.3f}, theta_ft {m['ood_ece_ft']:.3f}, theta_ft^B {m['ood_ece_ftB']:.3f}")
print(f"BANG - WiSE-FT: {100 * (m['ood_acc_bang'] - m['ood_acc_wise']):+.2f} points")
print("claims hold:", result.claims_hold)

# %% [markdown]
# **What showed at the quick preset** (read the numbers above). Claims 1 and 2 hold with room to spare: the
# weight average beats both of its ends OOD, the weight-space average beats the output-space one, and the
# fine-tuned model is markedly more confident than $\theta_0$ OOD while label smoothing + MixUp pulls its confidence
# far down. Mind what "over-confident" means here: it is *relative* to $\theta_0$, the imbalance the paper is about.
# By ECE, $\theta_{\rm ft}$ is the best calibrated of the three on OOD data; $\theta_0$ (short training with weight
# decay) is the *under*-confident one. The FalseFalseTrue rate is small but not zero: most of WiSE-FT's gain comes
# from samples that exactly one of the two models gets right, and the average keeps more of them right.
#
# Claim 3, non-inferiority, **does not hold** at the quick preset: BANG lands more than one point below WiSE-FT (the
# card's prototype measured −0.4 points; the per-seed numbers show how much this moves from seed to seed). So the
# paper's headline, BANG *beating* WiSE-FT, does not show here. Tempering went too far: $\theta_{\rm ft}^B$ is
# **under**-confident OOD (its ECE is *higher* than $\theta_{\rm ft}$'s, which is why ECE is only reported), and
# its own OOD accuracy collapses; in this toy the plain fine-tuned model is also the *better* OOD model of the two
# ends, so shrinking its voice does not help the average.
#
# What this toy does **not** show: the paper's evidence is CLIP on ImageNet and its shifts, where the fine-tuned
# model is the *worse* OOD model. The card suggests exploring that regime below. Note also that more patches make
# the toy easier, not more telling: at the standard preset (24 patches, 10 seeds; run `bang.run("standard")`, about
# half a minute) every model is near 0.95–0.97 OOD when this notebook was written, and claim 1's margin shrinks to a
# fraction of a point.

# %% [markdown]
# ## Exploration: a fine-tuned model that is worse OOD, yet more confident
#
# Raising only `ood_b_wrong` (0.5 to 0.7, tried while writing this notebook) did not get there: each patch's
# "wrong" map points to its *own* wrong label, so the wrong votes of different patches do not agree, and
# $\theta_{\rm ft}$ stayed above $\theta_0$ OOD. Weakening group B OOD (`ood_b` 0.15, wrong 0.6) and strengthening
# group A (`ood_a` 0.5) does. Not asserted; one run, the same seeds.

# %%
regime = bang.run(preset=preset, seed=seed, device=device, progress=False,
                  **{**overrides, "ood_a": 0.5, "ood_b": 0.15, "ood_b_wrong": 0.6})

# %% tags=["nbval-check-output"]
r = regime.metrics
print(f"OOD accuracy: theta_0 {r['ood_acc_pre']:.3f}, theta_ft {r['ood_acc_ft']:.3f} | WiSE-FT {r['ood_acc_wise']:.3f}, "
      f"BANG {r['ood_acc_bang']:.3f}, OSE {r['ood_acc_ose']:.3f}")
print(f"OOD confidence: theta_0 {r['ood_conf_pre']:.3f}, theta_ft {r['ood_conf_ft']:.3f}, theta_ft^B {r['ood_conf_ftB']:.3f}")
print(f"BANG - WiSE-FT: {100 * (r['ood_acc_bang'] - r['ood_acc_wise']):+.2f} points")

# %%
regime.figures["ood_path"]

# %% [markdown]
# In this regime $\theta_{\rm ft}$ is worse OOD than $\theta_0$ and more confident, the situation BANG is meant for.
# Read above whether the weight average at $\alpha = 0.5$ still beats $\theta_0$ and whether BANG beats WiSE-FT.
# When this notebook was written neither did: the best OOD accuracy on the path sat next to $\theta_0$ (small
# $\alpha$), and BANG's path fell faster than WiSE-FT's because $\theta_{\rm ft}^B$ on its own is poor OOD.

# %% [markdown]
# ## Try it
#
# Move $\alpha$, BANG's $\varepsilon$ and MixUp $a$, the colour correlations and the OOD breakage rates, then Train.
# The plot shows the OOD accuracy of each model while it trains.

# %%
widgets.explorer("bang", metric="ood_acc")

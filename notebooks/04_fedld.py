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
# # 04 · FedLD — Tackling Data Heterogeneity in Federated Learning via Loss Decomposition
#
# [arXiv 2408.12300](https://arxiv.org/abs/2408.12300) (MICCAI 2024) · official code
# [Zeng-Shuang/FedLD](https://github.com/Zeng-Shuang/FedLD) · family: **federated-robustness**
#
# **What you will see:** the global loss of every federated round split exactly into a local, a distribution-shift
# and an aggregation term, for FedAvg, a margin-control-only arm and FedLD, on digits spread over skewed clients.
# The margin loss lowers local over-confidence as the paper says; the paper's accuracy gain does **not** appear at
# this toy scale, in either of the two settings we try, and the notebook shows the numbers and what explains them.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
n_clients = None
alpha = None
feature_shift = None
rounds = None
local_epochs = None
lam = None
k_proportion = None

# %%
import inspect
from types import SimpleNamespace

import numpy as np
import pandas as pd
import plotly.express as px
import torch

import labkit.viz
import widgets
from labkit.core import overrides_from, resolve_params
from labkit.methods import fedld

overrides = overrides_from(fedld.PARAMS, globals())  # the knobs above, and any other param papermill injects
labkit.viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# Clients $i = 1..m$ hold $n_i$ samples, $p_i = n_i / \sum_j n_j$. In a round every client starts from the global
# model $w$ and trains locally to $w_i$; the server combines them into $w_{\text{glob}}$. With $L_i$ the loss on
# client $i$'s data and $L = \sum_i p_i L_i$ the loss on the union, the global loss splits **exactly** (it telescopes):
#
# $$
# L(w_{\text{glob}}) = \underbrace{\sum_i p_i L_i(w_i)}_{\text{local}}
#  + \underbrace{\sum_i p_i \big(L(w_i) - L_i(w_i)\big)}_{\text{distribution shift}}
#  + \underbrace{\Big(L(w_{\text{glob}}) - \sum_i p_i L(w_i)\Big)}_{\text{aggregation}} .
# $$
#
# FedLD attacks the two heterogeneity terms at once:
#
# * **on the clients, margin control** against over-confident local models (which fit their own skewed data and
#   do badly on everyone else's, the shift term): for a batch of logits $Z \in \mathbb{R}^{B\times C}$,
#   $P = \operatorname{softmax}(Z)$,
#   $$\ell = \operatorname{CE}(Z, y) + \lambda \log\!\big(1 + \lVert P \rVert_F^2\big),$$
#   with the Frobenius norm over the **whole batch**, as in the official code ($\lVert P\rVert_F^2 \in [B/C, B]$, so
#   the term's strength depends on the batch size; we keep $B = 32$ fixed);
# * **on the server, principal-gradient aggregation**, for every parameter tensor separately: stack the client
#   updates $g_i = w_i - w$ as rows of $G$, decompose $H = GG^\top/m = E\,\mathrm{diag}(s)\,E^\top$ ($s$ descending),
#   take $v_j = G^\top e_j$ for $j \le k = \lfloor 0.8\,m \rfloor$, and replace each update by
#   $$\hat g_i = \sum_{j \le k} \operatorname{sign}(g_i \cdot v_j)\,\frac{s_j}{\sum_l s_l}\,\lVert g_i\rVert\,\frac{v_j}{\lVert v_j\rVert},
#   \qquad w \leftarrow w + \frac1m \sum_i \hat g_i$$
#   (round 1 is a plain mean). Only directions many clients share, weighted by their eigenvalue share, survive.

# %% [markdown]
# ## The core functions, on tensors small enough to check by hand

# %%
print(inspect.getsource(fedld.margin_control_loss))
print(inspect.getsource(fedld.revise_updates))
print(inspect.getsource(fedld.principal_aggregate))

# %% tags=["nbval-check-output"]
# Z = [[0, 0], [ln 3, 0]]: P = [[.5, .5], [.75, .25]], CE = (ln 2 + ln 4/3)/2, ‖P‖_F² = 1.125
z, y = torch.tensor([[0.0, 0.0], [np.log(3.0), 0.0]]), torch.tensor([0, 0])
print(f"margin loss λ=0.5: {fedld.margin_control_loss(z, y, 0.5).item():.4f}"
      f"   by hand: {(np.log(2) + np.log(4 / 3)) / 2 + 0.5 * np.log(2.125):.4f}")

# two clients with orthogonal updates: s = (8, 4.5), k = ⌊0.8·2⌋ = 1 keeps only v1 ∥ (0, 1)
G = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
print("principal update (k=1):", np.round(fedld.principal_aggregate(G, 0.8).numpy(), 4),
      " by hand: [0, 8/12.5·4/2] = [0, 1.28]")
print("principal update (k=2):", np.round(fedld.principal_aggregate(G, 1.0).numpy(), 4),
      " by hand: [4.5/12.5·3/2, 1.28] = [0.54, 1.28]")
print("FedAvg (equal sizes):  ", G.mean(0).numpy(), " — the principal rule is shorter and drops client 1's direction")

# decomposition of a made-up round: C[i, j] = L_j(w_i), global model's L_j, sizes 1 and 3
terms = fedld.loss_decomposition(torch.tensor([[1.0, 3.0], [5.0, 2.0]]), torch.tensor([1.0, 2.0]), [1, 3])
print({k: round(v, 4) for k, v in terms.items()}, " L(w_glob) = 1/4·1 + 3/4·2 = 1.75")

# %% [markdown]
# One property the card's step 3 hides: $\operatorname{sign}(g_i\cdot v_j)\,v_j$ is the same for $v_j$ and $-v_j$,
# so the majority-sign calibration **cannot change the update** (the official code has the same property; the
# tests check it). What the rule does change is the length: the $v_j$ are orthogonal, so
# $\lVert\hat g_i\rVert = \lVert g_i\rVert\,\sqrt{\sum_{j\le k}(s_j/\sum_l s_l)^2} \le \lVert g_i\rVert$.

# %% [markdown]
# ## The data
#
# scikit-learn's 8×8 digits (shipped with the package), pixels divided by 16, a 70/30 stratified split. The training
# part is dealt to the clients by a Dirichlet(α) label skew: for every class a share vector $q \sim
# \mathrm{Dir}(\alpha\mathbf 1_m)$ says how much of that class each client gets. With `feature_shift=True` every
# client also sees its images through its own translation (±1 pixel) and contrast/brightness change
# $x' = \mathrm{clip}(a x + b, 0, 1)$ — the toy version of hospitals with different scanners; the test set is then
# shown through randomly chosen clients' shifts.

# %%
p = SimpleNamespace(**resolve_params(fedld.PARAMS, preset, {**overrides, "feature_shift": True}))
fed = fedld.make_federation(p, seed, "cpu")
counts = pd.DataFrame([np.bincount(c.y.numpy(), minlength=10) for c in fed.clients],
                      index=[f"client {i}" for i in range(len(fed.clients))])
counts.columns.name = "digit"
print(f"train {len(fed.y)} images over {len(fed.clients)} clients (α = {p.alpha}), test {len(fed.y_test)}")
counts

# %%
views = np.stack([v[0].numpy().reshape(8, 8) for v in fed.client_tests])
px.imshow(views, facet_col=0, binary_string=False, color_continuous_scale="gray_r", zmin=0, zmax=1,
          title="One test digit as each client's scanner shows it (feature_shift=True)", height=260)

# %% [markdown]
# ## Train FedAvg, margin-only and FedLD
#
# All arms share, per seed, the same split, the same initial MLP 64→64→10 and the same batch order: 1 local epoch of
# SGD (lr 0.05, momentum 0.5, weight decay 5·10⁻⁴, batch 32) per round. FedAvg uses plain cross-entropy and the
# size-weighted mean; *margin-only* adds the margin term with λ = 1 and keeps FedAvg; *FedLD* uses λ = 0.1 and the
# principal aggregation. Every round we log the three loss terms (plain cross-entropy for every arm), the global
# loss measured separately on the union, the test accuracy, and the confidence $\lVert\mathrm{softmax}\rVert^2$ of the
# local models on their own data. We run the label-skew setting and then the feature-shift one.

# %%
result = fedld.run(preset=preset, seed=seed, device=device, **overrides)
other = fedld.run(preset=preset, seed=seed, device=device,
                  **{**overrides, "feature_shift": not result.params["feature_shift"]})
runs = {("label skew + feature shift" if r.params["feature_shift"] else "label skew"): r for r in (result, other)}
for name, r in runs.items():
    print(f"{name}: {r.duration_s:.1f} s")

# %% [markdown]
# ## What happens, round by round
#
# The loss terms. The local term falls as the clients fit their own data; the shift term is what heterogeneity
# costs; the aggregation term is usually negative (combining the local models helps on the union).

# %%
result.figures["decomposition"]

# %%
result.figures["test_acc"]

# %%
result.figures["confidence"]

# %%
result.figures["per_client_acc"]

# %% [markdown]
# Inside the principal aggregation: the eigenvalue shares $s_j/\sum s$ of $H$ for the first weight matrix, and how the
# principal update compares with the FedAvg update computed from the **same** client updates — its direction
# (cosine) and its length.

# %%
result.figures["spectrum"]

# %%
result.figures["update_cosine"]

# %%
result.figures["update_norm_ratio"]

# %% [markdown]
# The same experiment with each client behind its own feature shift:

# %%
other.figures["test_acc"]

# %%
other.figures["decomposition"]

# %% [markdown]
# ## The claim check

# %%
for name, r in runs.items():
    print(f"— {name} —")
    for c in r.claims:
        print(c)

# %% tags=["nbval-check-output"]
for name, r in runs.items():
    c1, c2, c3 = r.claims
    n2 = c2.numbers
    print(f"{name}: decomposition within 1e-4 at all {c1.numbers['rounds_checked']} arm-rounds: {c1.passed}")
    print(f"  confidence on own data: FedAvg {n2['conf_fedavg']:.3f}, margin-only {n2['conf_margin']:.3f}"
          f" (cut {n2['conf_cut']:.0%}); test acc FedAvg {n2['acc_fedavg']:.3f},"
          f" margin-only {n2['acc_margin']:.3f} -> mechanism {'holds' if c2.passed else 'does not hold'}")
    per_seed = ", ".join(f"seed {s}: {c3.numbers[f'seed{s}_fedavg']:.3f} vs {c3.numbers[f'seed{s}_fedld']:.3f}"
                         for s in r.extras["seeds"])
    print(f"  FedAvg vs FedLD final accuracy ({per_seed}); mean {c3.numbers['acc_fedavg']:.3f} vs "
          f"{c3.numbers['acc_fedld']:.3f} -> paper claim FedLD > FedAvg {'shows' if c3.passed else 'does not show'}")

# %% [markdown]
# **What showed at the quick preset, and what did not** (the numbers are the printed ones above).
#
# * **The decomposition is exact.** The three terms, computed from every local model's loss on every client's data,
#   add up to the global loss measured by a separate forward pass, at every round of every arm, to float precision.
# * **The local mechanism shows.** Margin control with λ = 1 cuts the confidence of the local models on their own data
#   by well over half, and margin-only accuracy does not drop below FedAvg's (it is even a little higher here).
# * **The headline accuracy gain does not show.** FedLD ends *below* FedAvg, for both seeds, with label skew and
#   further below with feature shift. This agrees with the card's own pre-check (α = 0.1, 10 clients, 40 rounds:
#   FedAvg 0.907, FedLD 0.630; α = 0.5, 5 clients, 60 rounds: 0.960 vs 0.936; with feature shift 2–11 points below).
#
# **Did we implement the aggregation wrongly?** We read the official code line by line (`svd_tools.py: pcgrad_svd`,
# called from `running.py: train_round_fedld`; `methods/fedld.py: MarginalLogLoss`) and it matches the card: the
# margin term is `torch.norm(softmax(Z), p=2)` on the whole B×C matrix; the server decomposes $GG^\top/m$ per
# state-dict entry (`torch.svd`, which for this symmetric PSD matrix is the eigendecomposition), keeps
# $k = \lfloor m\cdot k_{\text{proportion}}\rfloor$ directions $G^\top e_j$, calibrates signs by majority (inert, as
# shown above), rescales each
# projection to $s_j/\sum s\cdot\lVert g_i\rVert$, averages over clients **unweighted**, averages one-element tensors,
# and uses a plain mean in round 1. The size-weighted average it applies afterwards is over identical models (each
# set to $w + \text{update}$), so it changes nothing. A literal loop transcription of that code agrees with
# `principal_aggregate` to 4·10⁻⁶ on random updates. The big difference is the model: the official runs fine-tune
# an **ImageNet-pretrained ResNet-50** on retinal and chest images (its BatchNorm statistics also pass through the
# rule), with lr 0.01 and batch 50, where we train a small model from scratch.
#
# **What explains the gap here.** The principal update points roughly where FedAvg's does with label skew (cosine
# around 0.9 in the plot above), much less so with feature shift (around 0.5), and it is only a third to a half as
# long (the norm-ratio plot): only $k$ directions are kept, each with magnitude $s_j/\sum s \cdot \lVert g_i\rVert$
# (for the spectrum above, $\sqrt{\sum_{j\le k} (s_j/\sum s)^2} \approx 0.5$), and the sign of a client's projection
# counts but not its size. For a model trained from scratch in a fixed number of rounds, shorter
# steps cost accuracy. Nothing here says FedLD cannot help a pretrained network on real scans; it says the gain is
# not a property of the rule that shows up on a small model trained from scratch.
#
# **Longer and larger runs, measured offline** (not re-run by this notebook; final test accuracy, mean over seeds
# 0–2 unless noted; each line's call reproduces it):
#
# | run | FedAvg | FedLD | also |
# | --- | --- | --- | --- |
# | `run(rounds=150, n_seeds=3, extra_arms=True)`, label skew, CPU | 0.963 | 0.912 | principal-only 0.913, margin-only 0.969 |
# | the same with `feature_shift=True` | 0.664 | 0.431 | principal-only 0.442, margin-only 0.686 |
# | `run(preset="standard")`: 10 clients, α = 0.1, 50 rounds, CPU | 0.913 | 0.450 | FedProx 0.913, principal-only 0.371, margin-only 0.931 |
# | `run(preset="full")`: 20 clients, CNN, feature shift, 200 rounds, H200 | 0.729 | 0.366 | FedProx 0.728, principal-only 0.365, margin-only 0.719 |
# | `run(preset="full", feature_shift=False)`, H200 | 0.972 | 0.900 | FedProx 0.972, principal-only 0.898, margin-only 0.977 |
# | quick, `norm_match=True, extra_arms=True`, seeds 0–1 | 0.907 | 0.892 | principal-only 0.898 (0.761 / 0.792 without stretching) |
# | the same with `feature_shift=True` | 0.472 | 0.329 | principal-only 0.310 (0.181 / 0.142 without stretching) |
#
# More rounds narrow the gap but do not close it, and the card's feature-shift setting (the full preset) widens it.
# The last two lines are a diagnostic that is not part of FedLD: `norm_match=True` stretches each tensor's principal
# update to the length of the FedAvg update of the same client updates. With label skew that recovers almost all of
# the gap — the deficit there is mostly step length; with feature shift it recovers only part — there the direction
# the rule picks is also worse than FedAvg's.

# %% [markdown]
# ## Try it yourself
#
# Change α (smaller = more skew), λ, k_proportion, the number of clients, local epochs or the feature shift, and
# retrain. Is there any setting where FedLD beats FedAvg on more than one seed?

# %%
widgets.explorer("fedld", metric="test_acc")

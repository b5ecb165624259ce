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
# # 04 · FedLD — Tackling Data Heterogeneity in Federated Learning via Loss Decomposition
#
# [arXiv 2408.12300](https://arxiv.org/abs/2408.12300) (MICCAI 2024) · official code
# [Zeng-Shuang/FedLD](https://github.com/Zeng-Shuang/FedLD) · family: **federated-robustness**
#
# **What you will see:** the global loss of every federated round split exactly into a local, a distribution-shift
# and an aggregation term, for FedAvg, a margin-control-only arm and FedLD, on digits spread over skewed clients.
# The notebook checks the paper's headline (FedLD more accurate than FedAvg) and the local mechanism (margin control
# lowers over-confidence) over three seeds, in two settings, and says which of them show at this toy scale.

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

import numpy as np
import pandas as pd
import plotly.express as px
import torch
from IPython.display import Markdown

import labkit.viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.methods import fedld
from labkit.substrates.federated import Client, LocalSGD

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
print(f"local {terms.local:.4f}, shift {terms.shift:.4f}, aggregation {terms.aggregation:.4f},"
      f" total {terms.total:.4f}   L(w_glob) = 1/4·1 + 3/4·2 = 1.75")

# %% [markdown]
# ## The algorithm: one FedLD round
#
# `fedld_round` is the whole method for one round: every client trains from the global model with the margin loss,
# the server stacks the updates tensor by tensor and applies the plain mean (round 1) or the principal rule.

# %%
print(inspect.getsource(fedld.fedld_round))

# %% [markdown]
# Three rounds on a tiny federation (three clients with 6, 10 and 14 random points in $\mathbb R^4$, three classes,
# a linear model), printing the length of the server's update next to the plain mean of the same client updates,
# and the cosine between the two. Round 1 is the plain mean itself (cosine 1); from round 2 the principal rule acts.

# %%
g = torch.Generator().manual_seed(0)
tiny = [Client(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in (6, 10, 14)]
torch.manual_seed(0)
tiny_model = torch.nn.Linear(4, 3)
for r in range(3):
    rr = fedld.fedld_round(tiny_model, tiny, round_idx=r, lam=0.1, k_proportion=0.8,
                           opt=LocalSGD(batch_size=4), generator=g)
    upd = torch.cat([u.reshape(-1) for u in rr.update.values()])
    plain = torch.cat([G.mean(0).reshape(-1) for G in rr.updates.values()])
    print(f"round {r + 1}: ‖update‖ = {upd.norm():.3f}, ‖plain mean‖ = {plain.norm():.3f},"
          f" cos = {fedld.cosine(upd, plain):.3f}")

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
p = fedld.Knobs(**resolve_params(fedld.PARAMS, preset, {**overrides, "feature_shift": True}))
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
# All arms share, per seed, the same split, the same initial model and the same batch order. FedAvg uses plain
# cross-entropy and the size-weighted mean; *margin-only* adds the margin term and keeps FedAvg's server; *FedLD*
# uses its own λ and the principal aggregation. Every round we log the three loss terms (plain cross-entropy for
# every arm), the global loss measured separately on the union, the test accuracy, and the confidence
# $\lVert\mathrm{softmax}\rVert^2$ of the local models on their own data. We run the label-skew setting and then
# the feature-shift one (the settings actually used are printed below the run).

# %%
result = fedld.run(preset=preset, seed=seed, device=device, **overrides)
other = fedld.run(preset=preset, seed=seed, device=device,
                  **{**overrides, "feature_shift": not result.params["feature_shift"]})
runs = {("label skew + feature shift" if r.params["feature_shift"] else "label skew"): r for r in (result, other)}
for name, r in runs.items():
    print(f"{name}: {r.duration_s:.1f} s")

# %%
q = result.params
model_text = f"MLP 64→{q['hidden']}→10" if q["model"] == "mlp" else "small CNN"
Markdown(f"This run: {q['n_clients']} clients, Dirichlet α = {q['alpha']:g}, {q['rounds']} rounds of "
         f"{q['local_epochs']} local epoch(s), {model_text}, SGD lr {q['lr']:g}, momentum {q['momentum']:g}, "
         f"weight decay {q['weight_decay']:g}, batch {q['batch_size']}; margin-only λ = {q['lam_margin']:g}, "
         f"FedLD λ = {q['lam']:g} with k = max(1, ⌊{q['k_proportion']:g}·m⌋) principal directions; "
         f"{q['n_seeds']} seeds ({', '.join(str(s) for s in result.extras['seeds'])}).")

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
#
# Each claim compares one quantity per seed with a margin fixed in the code before the run; the verdict comes from
# the 95% t-interval of the mean over seeds: **holds** (interval on the claimed side), **does not hold** (on the other
# side), **inconclusive** (it straddles the margin). The headline is the paper's: FedLD is more accurate than
# FedAvg under heterogeneity. The supporting checks are the local mechanism (margin control lowers the local models'
# confidence) and the paper's ablation (margin control alone helps). That the three loss terms add up to the global
# loss is an identity, not a claim: `tests/test_fedld.py` checks it at every round of every arm.

# %% tags=["nbval-check-output"]
for name, r in runs.items():
    print(f"— {name} —")
    for c in r.claims:
        print(c)

# %% [markdown]
# The per-seed numbers behind the intervals (final-round accuracies move in the third decimal between CPU kernels,
# so they are not part of the checked output):

# %%
for name, r in runs.items():
    out = r.extras["outcomes"]
    for k, s in enumerate(r.extras["seeds"]):
        accs = ", ".join(f"{a.label} {fmt(out[a.key][k].acc, 3)}" for a in r.extras["arms"])
        print(f"{name}, seed {s}: {accs}")
    print(f"{name}: largest |local + shift + aggregation − L(w_glob)| over all rounds and arms = "
          f"{r.metrics['max_decomp_gap']:.1e}")

# %%
def verdict_of(r, i):
    return r.claims[i].verdict.value


def principal_summary(r):
    h = r.history
    fedld_label = next(a.label for a in r.extras["arms"] if a.key == fedld.FEDLD)
    rows = h[(h.series == fedld_label) & (h.step > 1)]
    cos = rows[rows.metric == "cos_fedavg"].value.mean()
    ratio = rows[rows.metric == "norm_ratio"].value.mean()
    return f"cosine {cos:.2f} and length ratio {ratio:.2f}"


lines = [f"**What showed at the {preset} preset, and what did not** (read from the verdicts above; "
         f"{result.params['n_seeds']} seeds, {result.params['rounds']} rounds)."]
for name, r in runs.items():
    head = r.claims[0]
    lines.append(
        f"* *{name}*: the headline (FedLD more accurate than FedAvg) **{verdict_of(r, 0)}** "
        f"(FedLD − FedAvg = {fmt(head.interval.mean, 2, sign=True)}); margin control lowering local confidence "
        f"**{verdict_of(r, 1)}**; margin control alone beating FedAvg **{verdict_of(r, 2)}**. "
        f"FedLD's principal update vs FedAvg's on the same client updates, mean over rounds ≥ 2: "
        f"{principal_summary(r)}."
    )
Markdown("\n".join(lines))

# %% [markdown]
# How to read this. The mechanism check asks whether the margin term makes the local models less confident on their
# own skewed data, the driver of the distribution-shift term; the headline asks whether the whole method ends more
# accurate. The card's own pre-check found no accuracy gain at toy scale (α = 0.1, 10 clients, 40 rounds: FedAvg 0.907, FedLD 0.630; α = 0.5, 5 clients,
# 60 rounds: 0.960 vs 0.936; with feature shift 2–11 points below).
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
# **What explains the gap here.** The principal update is shorter than FedAvg's (the length ratio above, and the
# norm-ratio plot): only $k$ directions are kept, each with magnitude $s_j/\sum s \cdot \lVert g_i\rVert$, and the
# sign of a client's projection counts but not its size. With feature shift it also points further away from
# FedAvg's direction (the cosine above). For a model trained from scratch in a fixed number of rounds, shorter
# steps cost accuracy. Nothing here says FedLD cannot help a pretrained network on real scans; it says the gain is
# not a property of the rule that shows up on a small model trained from scratch.
#
# **Longer and larger runs, measured offline** (not re-run by this notebook; measured with the previous version of
# this notebook, which used seeds 0–2 unless noted; final test accuracy, mean over seeds; each line's call reproduces it):
#
# | run | FedAvg | FedLD | also |
# | --- | --- | --- | --- |
# | `run(rounds=150, n_seeds=3, extra_arms=True)`, label skew, CPU | 0.963 | 0.912 | principal-only 0.913, margin-only 0.969 |
# | the same with `feature_shift=True` | 0.664 | 0.431 | principal-only 0.442, margin-only 0.686 |
# | `run(preset="standard")`: 10 clients, α = 0.1, 50 rounds, CPU | 0.913 | 0.450 | FedProx 0.913, principal-only 0.371, margin-only 0.931 |
# | `run(preset="full")`: 20 clients, CNN, feature shift, 200 rounds, H200 | 0.729 | 0.366 | FedProx 0.728, principal-only 0.365, margin-only 0.719 |
# | `run(preset="full", feature_shift=False)`, H200 | 0.972 | 0.900 | FedProx 0.972, principal-only 0.898, margin-only 0.977 |
# | quick, `norm_match=True, extra_arms=True, n_seeds=2`, seeds 0–1 | 0.907 | 0.892 | principal-only 0.898 (0.761 / 0.792 without stretching) |
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
import widgets

widgets.explorer("fedld", metric="test_acc")

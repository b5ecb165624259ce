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
# # 20 · EAR — Efficient Model Adaptation for Continual Learning at the Edge
#
# [arXiv 2308.02084](https://arxiv.org/abs/2308.02084) (SRI International, 2023) · no official code found ·
# family: **adaptation**
#
# **What you will see:** a frozen digit encoder meets rotated, inverted and noisy digits. Hyperdimensional (HDC)
# statistics of its features are meant to flag each new domain, zero-shot NAS picks a small adaptor for it, and
# routing sends each input to its domain's adaptor, against sequential fine-tuning, which forgets. At the quick
# preset the HDC detector does **not** flag the new domains (rotated digits look *more* familiar than real ones),
# so EAR never grows; given the boundaries, growth and routing do keep the old domains. The notebook shows both.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
hd_dim = None   # hypervector dimension D
window = None   # W, inputs per window of the shift test
kappa = None    # a window with more than this share of OOD inputs declares a new domain
proxy = None    # zero-cost proxy: naswot, synflow, grad_norm or random
budget = None   # B, most parameters an adaptor and its head may have

# %%
import inspect

import numpy as np
import pandas as pd
import plotly.express as px
import torch
from torch import nn

import widgets
from labkit import viz
from labkit.core import overrides_from, resolve_params
from labkit.data import streams
from labkit.methods import ear

overrides = overrides_from(ear.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# An edge device runs a model that was trained on one **source** domain. Later the inputs change (a new sensor, other
# lighting, a rotated camera). It cannot retrain a big network or keep every old example. EAR keeps a **frozen
# encoder** $E$ and adds, for each new domain, a small **adaptor** $a_d$ with its own head $g_d$. Three pieces:
#
# **1. Detecting a new domain with hyperdimensional computing** (after HDFF, Wilson et al., WACV 2023). The encoder's
# tapped layers $\ell$ give features $f_\ell(x) \in \mathbb R^{c_\ell}$. Fixed random projections
# $P_\ell \in \mathbb R^{D\times c_\ell}$ with orthonormal columns (the $Q$ of a QR decomposition of a Gaussian matrix)
# map them into one hypervector, and class descriptors are bundled (added) from in-distribution training data:
#
# $$H(x) = \sum_\ell P_\ell\,\big(f_\ell(x) - \mu_\ell\big), \qquad C_k = \sum_{i:\,y_i = k} H(x_i), \qquad
# s(x) = \max_k \cos\big(H(x), C_k\big).$$
#
# $x$ is out-of-distribution (OOD) when $s(x) < \theta$, with $\theta$ set so that 95% of held-out in-distribution
# inputs pass. A **new domain** is declared when more than $\kappa$ of a window of $W$ inputs are OOD.
#
# **2. Choosing the adaptor without training it (zero-shot NAS).** Candidates: depth 1–2, width 8–64, with or without
# a skip (the head also sees the encoder output), at most $B$ parameters with the head. Each is scored **at
# initialisation** on one batch of the new domain, e.g. by NASWOT (Mellor et al. 2021): with $c_i \in \{0,1\}^{N_A}$ the
# on/off pattern of the $N_A$ ReLUs for input $x_i$,
#
# $$K_{ij} = N_A - \mathrm{Hamming}(c_i, c_j), \qquad \text{score} = \log\,\lvert\det K\rvert,$$
#
# high when the untrained network already separates the inputs. SynFlow and grad-norm are the other proxies.
#
# **3. Growing and routing.** The picked adaptor + head is trained on the new domain (encoder frozen), the domain's
# class descriptors join the memory, and nothing old is overwritten. A test input goes to the domain that owns its
# most similar class descriptor, $\hat d(x) = \arg\max_d \max_k \cos(H(x), C_{d,k})$, and is classified by
# $g_{\hat d}(a_{\hat d}(E(x)))$.
#
# *Inferred:* the paper gives the design at the level of its abstract and no code is public; the formulas come from
# HDFF and the zero-cost-proxy papers, and how EAR composes them is our reading (the card says so too). Where the card
# leaves a choice open we say which one we made: the routing uses each domain's **class** descriptors (a single
# bundled descriptor per domain, the card's $D_d = \sum_i H(x_i)$, is also implemented: with features centred on the
# source mean, $D_{\rm source} \approx 0$); $\theta$ is re-set after each growth over all known domains' held-out
# inputs.

# %% [markdown]
# ## The core functions, on tensors small enough to check by hand

# %%
print(inspect.getsource(ear.hdc_encode))
print(inspect.getsource(ear.naswot_kernel))
print(inspect.getsource(ear.naswot_score))
print(inspect.getsource(ear.synflow_score))

# %% tags=["nbval-check-output"]
# HDC with D = 4: layer 1 (2 units) goes to coordinates 0 and 1, layer 2 (1 unit) to coordinate 2
P1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
P2 = torch.tensor([[0.0], [0.0], [1.0], [0.0]])
H = ear.hdc_encode([torch.tensor([[3.0, 1.0]]), torch.tensor([[2.0]])], [P1, P2],
                   [torch.tensor([1.0, 1.0]), torch.tensor([0.0])])
print("H(x) =", H.tolist()[0], "  by hand: (3-1, 1-1, 2, 0) = (2, 0, 2, 0)")
C = ear.bundle_by_class(torch.tensor([[1.0, 0.0], [3.0, 1.0], [0.0, 2.0]]), torch.tensor([0, 0, 1]), [0, 1])
print("class descriptors:", C.tolist(), "  by hand: C0 = (1,0)+(3,1) = (4,1), C1 = (0,2)")
print(f"s((1,0)) = {ear.ood_score(torch.tensor([[1.0, 0.0]]), C).item():.3f}   by hand: 4/sqrt(17) = {4 / 17 ** 0.5:.3f}")

# NASWOT: identity layer + ReLU, inputs (1,-1), (-1,1), (1,1) give codes (1,0), (0,1), (1,1)
net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
with torch.no_grad():
    net[0].weight.copy_(torch.eye(2))
    net[0].bias.zero_()
x = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
K = ear.naswot_kernel(ear.relu_codes(net, x))
print("K =", K.int().tolist(), "  det K = 2*3 - 0 + 1*(0 - 2) = 4")
print(f"NASWOT score = {ear.naswot_score(net, x, ridge=0.0):.3f}   by hand: log 4 = {np.log(4):.3f}")

# SynFlow: |W1| = [[1,2],[3,4]], |W2| = [[5,6]], input of ones: h = (3,7), R = 57, each layer's sum is R
flow = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
with torch.no_grad():
    flow[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
    flow[2].weight.copy_(torch.tensor([[-5.0, 6.0]]))
    flow[0].bias.zero_()
    flow[2].bias.zero_()
print(f"SynFlow = {ear.synflow_score(flow, 2):.3f}   by hand: 57 + 57 = 114 (signs do not matter)")

# %% [markdown]
# The tests (`tests/test_ear.py`) also check the HDC encoder, the bundling, the cosine and the bipolar sign against
# **torchhd** (`torch-hd` 5.8.4: `embeddings.Projection`, `multiset`, `models.Centroid`, `normalize`), AUROC against
# scikit-learn, and grad-norm against autograd.
#
# **What the reference code does** (read, not copied). HDFF's official code (`SamWilso/HDFF_Official`) draws each
# projection with `nn.init.orthogonal_` (as our QR), bundles layers and classes by plain addition, scores by the
# maximum cosine to the class bundles, and centres each layer by **one scalar**, the mean over its channels
# (`centring="layer"` here; the card's per-unit centring is our default). NASWOT's official code
# (`BayesWatch/nas-without-training`) builds $K$ from the signs of every ReLU's input, summed over ReLUs, and takes
# `slogdet` with **no** ridge; ours adds $10^{-3} I$ because our small adaptors have fewer distinct codes than the
# 64 inputs, which makes $K$ singular. SynFlow and grad-norm follow the zero-cost-proxies code (Abdelfattah et al.):
# absolute parameters in float64 and an all-ones input; one gradient norm per layer, summed.

# %% [markdown]
# ## The data: one stream of four domains
#
# scikit-learn's 8×8 digits (pixels / 16), dealt into four disjoint, class-balanced shares, one per domain, each with
# its own 70/30 split: the **original** digits (the source), rotated 90° (**rot90**), **inverted** ($1 - x$), and
# **noise** (Gaussian, $\sigma = 0.3$, with random ±1-pixel shifts, clipped to [0, 1]). `labkit.data.streams` builds
# it (and the class-incremental stream: digits 0–4, then 5–9).

# %%
p = resolve_params(ear.PARAMS, preset, overrides)  # the values the run below will use
stream = streams.digits_domain_stream(streams.DIGITS_DOMAINS[:p["n_domains"]], seed, p["side"], p["noise_sigma"],
                                      disjoint=p["disjoint"])
side = stream.side
pd.DataFrame([{"domain": t.name, "train": len(t.y_train), "test": len(t.y_test)} for t in stream.tasks])

# %%
first = [np.flatnonzero(t.y_train == 3)[0] for t in stream.tasks]
views = np.stack([t.x_train[i].reshape(side, side) for t, i in zip(stream.tasks, first)])
fig = px.imshow(views, facet_col=0, color_continuous_scale="gray_r", zmin=0, zmax=1, height=260,
                title="A '3' from each domain (each domain holds different images)")
fig.for_each_annotation(lambda a: a.update(text=stream.names[int(a.text.split("=")[1])]))
fig

# %% [markdown]
# ## Run the stream: EAR and its baselines
#
# Per seed: an MLP encoder $64 \to 64 \to 32$ (ReLU) is trained on the source for 300 Adam steps and frozen; both
# hidden layers are tapped, $D = 2048$. The source head is domain 0's "adaptor". Each new domain's **test** inputs
# arrive unlabelled in windows of $W = 64$; the detector scores them with what it knows. Then:
#
# * **EAR** grows an adaptor (13 candidates under $B = 3000$, scored by NASWOT on 64 inputs, the pick trained for 200
#   steps on the domain's training set) only if a window had more than $\kappa = 0.5$ OOD inputs;
# * **EAR, boundaries known** grows the same adaptor at every domain boundary and routes by HDC: the detector taken
#   out, so growth and routing can be judged on their own;
# * **oracle routing** uses those adaptors with the true domain of every input (the upper bound for routing);
# * **single adaptor**: one adaptor (the first NAS pick's shape) + head on the frozen encoder, trained on each
#   domain in turn;
# * **fine-tuning**: the pretrained encoder + head, every weight trained on each new domain in turn.
#
# To measure the proxies, every candidate is also trained (side by side, one Adam over the summed loss: each gets
# exactly its own training). The class-incremental stream runs after it.

# %%
result = ear.run(preset=preset, seed=seed, device=device, **overrides)
print(f"{result.duration_s:.1f} s")

# %% [markdown]
# ## Does the HDC detector see the new domains?
#
# The score $s(x)$ of the source test inputs and of each new domain's, with the source descriptors only, and the
# threshold $\theta$. For a good detector the new domains sit to the left of $\theta$.

# %%
result.figures["ood_scores"]

# %%
result.figures["roc"]

# %%
result.figures["auroc"]

# %% tags=["nbval-check-output"]
table = pd.DataFrame({n: {k: float(np.mean(v)) for k, v in row.items()}
                      for n, row in result.extras["auroc_per_seed"].items()})
print("AUROC, source test (in) vs each new domain (out), source model only")
print(table.round(3).to_string())
nearest = pd.DataFrame({n: r["nearest"] for n, r in result.extras["ood_raw"].items()})
nearest.index.name = "nearest class descriptor"
print("\nhow many test inputs of each domain have each class descriptor as their nearest")
print(nearest.T.to_string())

# %% [markdown]
# **Why rotated digits look familiar.** Read the last table: nearly every rotated digit has the *same* class
# descriptor as its nearest (the encoder maps rotated digits to one class's direction), and on average matches it
# more closely than real digits match their own class (the histogram above), so its score $s(x)$ is high. The cosine
# ignores how far a feature vector is from the source data; Mahalanobis distance, which does not, separates rot90
# almost perfectly. The table also shows two choices the card leaves open: centring per unit (the card) against one
# scalar per layer (what HDFF's own code does) or none, and the first tapped layer alone. Some do better, none
# reaches 0.9 on rot90, and we keep the card's default anyway: choosing the detector by its AUROC on the very domains
# it is meant to discover would be fitting to the test.
#
# Over the stream: the share of each window flagged OOD as it arrives, against $\kappa$ (dashed). EAR grows only
# where a window crosses it.

# %%
result.figures["stream"]

# %% [markdown]
# ## Forgetting: accuracy on old and new domains
#
# Rows: after that stage of the stream. Columns: the domain tested. Fine-tuning gains each new domain and loses the
# old ones. EAR, which grew nothing, stays the source model. With the boundaries given, the adaptors keep every
# domain it has learned.

# %%
result.figures["accuracy_matrix"]

# %%
result.figures["acc_seen"]

# %% [markdown]
# Routing with an adaptor for every domain: rows are test domains, columns the adaptor they were sent to.

# %%
result.figures["routing EAR, boundaries known"]

# %% [markdown]
# ## Zero-shot NAS: did the proxy pick a good adaptor?
#
# Every candidate's proxy score at initialisation against its test accuracy after the same training, per domain, the
# pick starred; Kendall's $\tau$ of each proxy with accuracy (one dot per grown domain); and what was picked.

# %%
for name in result.extras["names"][1:]:
    if f"nas {name}" in result.figures:
        result.figures[f"nas {name}"].show()

# %%
result.figures.get("proxy_tau")  # only when every candidate is trained (train_candidates)

# %%
result.figures["architecture"]

# %% [markdown]
# ## The class-incremental stream
#
# Digits 0–4, then 5–9: the encoder (and its 5-way head) is trained on 0–4 and frozen; the HDC detector meets the
# new classes, EAR grows a 5-way adaptor + head for them, and routing decides which head answers (so it has to tell
# the task from the input). Fine-tuning trains one 10-way network on each task in turn.

# %%
result.figures.get("class_incremental")  # only when the class stream runs (class_incremental)

# %% [markdown]
# ## The claim check
#
# The card's checks at the quick preset, computed from the run above: (1) HDC AUROC, source test vs each new domain,
# $\ge 0.9$ for every domain and $\ge$ MSP's $- 0.02$; (2) after the whole stream, EAR's mean accuracy over the four
# domains $\ge$ sequential fine-tuning $+ 0.20$; (3) the share of test inputs routed to their true domain
# $\ge 0.9$; and, reported only: the same two checks with the boundaries given, the NAS pick's size and its rank
# among the trained candidates, and the class-incremental stream.

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)

# %% tags=["nbval-check-output"]
ex = result.extras
grown = [d["name"] for d in ex["detection_first_seed"][1:] if d["first_flag"] >= 0]
print("domains EAR detected and grew an adaptor for:", grown or "none")
for name in ("EAR", "EAR, boundaries known", "fine-tuning", "single adaptor"):
    print(f"{name:>22}: final accuracy per domain {np.round(ex['matrices'][name][-1], 3).tolist()}")
for name, it in zip(ex["names"][1:], ex["nas_first_seed"]):
    print(f"{name}: picked {it['pick_label']} ({it['pick_size']} parameters), "
          f"rank {it.get('pick_rank')} of {len(it['labels'])} after training")
print("claims hold:", result.claims_hold)

# %% [markdown]
# **What showed at the quick preset, and what did not** (the numbers are the printed ones above).
#
# * **Detection does not show.** The HDC AUROC is below 0.9 for every new domain, and for rot90 it is about chance:
#   rotated digits all land near one class descriptor (the table above). HDC does beat MSP, as the card expects, but
#   no window crosses $\kappa$, so **EAR never grows an adaptor**, its final accuracy is the source model's, and
#   checks (2) and (3) fail as a consequence: both are about growth that never happened. This is a result, not a
#   tuning problem: we did not change the detector to pass it (see the centring table and the note under it).
# * **Growth and routing do show when the boundaries are given.** With an adaptor for every domain, the mean accuracy
#   over the four domains ends far above fine-tuning's and close to oracle routing. Fine-tuning forgets rot90 and
#   invert almost completely; its source accuracy comes back with the last domain, noisy upright digits, which
#   resemble it. HDC routing sends most inputs to the right adaptor, just under the card's 0.9: the noise domain is
#   the one it confuses, mostly with the source.
# * **NAS.** NASWOT at initialisation picks candidates with the most ReLU units that fit the budget (more units, more
#   distinct codes, larger $\log\det K$); the printed ranks and $\tau$ say how well that lines up with accuracy after
#   training here: a weak positive correlation, and one domain (noise) where no adaptor does well on the frozen
#   features.
# * **Class-incremental.** Here detection works: digits 5–9 are flagged, an adaptor is grown, and EAR keeps both
#   halves while fine-tuning forgets 0–4 completely (see the reported claim).
#
# The standard preset (3 seeds, longer training) gives the same picture; see the card's notes and the report.
# The paper's own benchmarks and numbers were not reproduced: they are not public in a form we could check.

# %% [markdown]
# ## Try it
#
# Change $D$, $W$, $\kappa$, the proxy or the budget $B$ and retrain. The live plot shows each arm's mean accuracy
# over the domains seen so far, stage by stage. Try a smaller `kappa`, such as 0.2: do the inverted and noisy digits
# get detected, and what does growing an adaptor for them do to EAR's accuracy? (`main_only=False` shows the
# secondary knobs too, such as `centring` and `routing`.)

# %%
widgets.explorer("ear", metric="acc_seen")

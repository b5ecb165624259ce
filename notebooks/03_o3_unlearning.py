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
# # 03 · O3 — On Large Language Model Continual Unlearning (v1: Practical Unlearning for Large Language Models)
#
# [arXiv 2407.10223](https://arxiv.org/abs/2407.10223) (ICLR 2025) · [official code](https://github.com/GCYZSL/O3-LLM-UNLEARNING)
# · family: **alignment**
#
# **What you will see:** a digits classifier is asked to forget class 0, then 1, then 2, each time with only that
# class's images at hand. One low-rank adapter per request destroys the answers; an out-of-distribution detector
# decides, per input, how much of the adapters to load. Retained classes keep their accuracy; an adapter that is
# always on wrecks them. Whether the forgotten classes really stay forgotten is the part to watch.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
orthogonal_weight = None  # λ_o on Σ_{i<t} ‖A_i A_tᵀ‖_F²
nu = None                 # ν of the one-class SVM
steepness = None          # k: the steepness of the soft weight (the code: 10)
offset = None             # c: the soft weight's offset; its floor is sigmoid(−c) (the code: 2)
n_requests = None         # forget class 0, then 1, … (this many requests)

# %%
import inspect

import numpy as np
import torch
from IPython.display import Markdown
from torch import nn

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.methods import o3_unlearning as o3
from labkit.models.adapters import LoRALinear

overrides = overrides_from(o3.PARAMS, globals())  # the knobs above, and any other param papermill injects
p = o3.Knobs(**resolve_params(o3.PARAMS, preset, overrides))  # the values the run below will use
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# Unlearning requests arrive one after another: "forget $U_1$", later "forget $U_2$", … By the time request $t$ comes,
# the earlier forget sets and the retained data may be gone. O3 never touches the base weights $W_0$. For each request
# it trains two things on $U_t$ alone:
#
# **1. An unlearning LoRA** $(A_t \in \mathbb R^{r\times d_{in}}, B_t \in \mathbb R^{d_{out}\times r})$ that destroys
# the answers on $U_t$ — cross-entropy against **random labels** $\tilde y$, drawn once per example — while staying
# orthogonal to the (frozen) down-projections of the earlier requests:
#
# $$\mathcal L_t = \mathrm{CE}\big(f(x;\,W_0 + \textstyle\sum_{i\le t}\tfrac{\alpha}{r}B_iA_i),\ \tilde y\big)
#   + \lambda_o \sum_{\text{layers}}\sum_{i<t}\big\|A_iA_t^\top\big\|_F^2 .$$
#
# **2. An out-of-distribution detector**: a LoRA on a copy of the encoder sees a *masked* copy of each input, a frozen
# copy sees the clean input. With $z_\ell$ the layer-$\ell$ features, $S_\ell = z_\ell^{\rm masked}\,(z_\ell^{\rm clean})^\top$
# (a $B\times B$ matrix, no normalisation, no temperature), the loss is masked reconstruction (the paper: MLM) plus
# the **contrastive entropy** $\sum_\ell \frac1B\sum_i H\big(\mathrm{softmax}_j S_{\ell,ij}\big)$: each masked sample
# must match one clean sample sharply.
#
# The detector's **layer-aggregated score**: per layer, a Gaussian fitted to the forget features (global, Mahalanobis)
# and the nearest forget example (local, cosine),
# $s_\ell(x) = -\tfrac12(z_\ell-\mu_\ell)^\top\Sigma_\ell^{-1}(z_\ell-\mu_\ell) + 1000\cdot\max_j\cos(z_\ell, z_j)$;
# the vector $(s_1,\dots,s_L)$, standardised, goes into a linear one-class SVM whose score is $u(x)$.
#
# **Soft loading.** Two Gaussians fitted to $u$ — on the forget-train set (mean $m_1$) and on a held-out part of it
# ($m_2, \sigma_2$) — give a mixture CDF $\Phi$, $x_0 = (m_1+m_2)/2$, and the weight
#
# $$w(x) = \mathrm{sigmoid}\big(10\,(1 - |\Phi(u) - \Phi(2x_0 - u)|) - 2\big) \in (0.12,\ 1),\qquad
#   h' = W_0h + b + w(x)\,\textstyle\sum_t \tfrac{\alpha}{r}B_tA_t h,$$
#
# with $w(x) = \max_t w_t(x)$ over the requests' detectors. Inputs like the forget data get the adapters; others get
# (almost) the original model — **without any retained data**.
#
# *The toy.* An MLP 64→128→128→10 on scikit-learn's 8×8 digits stands in for the LLM; its two hidden layers are the
# detector's "layers"; pixel masking and reconstruction stand in for MLM. Two choices differ from the official code
# (read for this notebook): the code writes the local term as $-1000\cos$, so its two terms point opposite ways and it
# picks the final sign by AUROC on held-out *non-forget* data; here both terms are similarities and the sign is fixed
# by construction (below). And the layer scores are standardised before the linear SVM.

# %% [markdown]
# ## The pieces, on cases you can check by hand
#
# **Contrastive entropy** on a $2\times 2$ case: $z^{\rm masked} = I$, $z^{\rm clean} = \mathrm{diag}(\ln 3, 0)$, so
# $S = \mathrm{diag}(\ln 3, 0)$; row 1 has softmax $(3/4, 1/4)$, row 2 $(1/2, 1/2)$, and the loss is the mean of their
# entropies, $(0.562 + 0.693)/2 = 0.628$.
#
# **Orthogonality penalty**: $A_1 = (1, 0, 0)$, $A_2 = (0, 1, 0)$, $A_t = (2, 1, 0)$ gives
# $\|A_1A_t^\top\|^2 + \|A_2A_t^\top\|^2 = 4 + 1 = 5$.
#
# **Soft weight** with $m_1 = m_2 = 0$, $\sigma_2 = 1$: at $u = 0$ the CDF gap is 0 and $w = \mathrm{sigmoid}(8) = 0.9997$;
# at $u = \pm 1$ the gap is $\Phi(1) - \Phi(-1) = 0.683$, so $w = \mathrm{sigmoid}(10\cdot 0.317 - 2) = 0.764$; far away
# the gap is 1 and $w = \mathrm{sigmoid}(-2) = 0.119$, the floor: **retained inputs always see 12% of the adapters.**

# %%
print(inspect.getsource(o3.contrastive_entropy))
print(inspect.getsource(o3.orthogonality_penalty))
print(inspect.getsource(o3.SoftWeight))

# %% tags=["nbval-check-output"]
ce = o3.contrastive_entropy(torch.eye(2), torch.diag(torch.tensor([float(np.log(3.0)), 0.0])))
pen = o3.orthogonality_penalty([torch.tensor([[1.0, 0, 0]]), torch.tensor([[0.0, 1, 0]])], torch.tensor([[2.0, 1, 0]]))
w = o3.SoftWeight(m1=0.0, m2=0.0, sigma=1.0)(np.array([0.0, 1.0, -1.0, 50.0]))
print(f"contrastive entropy {ce.item():.3f}   (hand: 0.628)")
print(f"orthogonality penalty {pen.item():.3f}   (hand: 5.000)")
print("w(u) at u = 0, 1, -1, 50:", " ".join(f"{v:.3f}" for v in w), "  (hand: 1.000 0.764 0.764 0.119)")

# %% [markdown]
# **Soft loading** is a stack of LoRAs on one frozen linear layer, all scaled by the per-sample $w$. With one adapter and
# $w = 1$ it is exactly labkit's `LoRALinear` (which the adapter tests match to PEFT):

# %%
print(inspect.getsource(o3.GatedLoRAStack.forward))

# %% tags=["nbval-check-output"]
torch.manual_seed(0)
stack = o3.GatedLoRAStack(nn.Linear(6, 4), r=2, alpha=4.0)
stack.add_adapter(torch.Generator().manual_seed(0))
with torch.no_grad():
    stack.lora_B[0].normal_()
ref = LoRALinear(nn.Linear(6, 4), r=2, alpha=4.0)
ref.load_state_dict({"base.weight": stack.base.weight, "base.bias": stack.base.bias,
                     "lora_A": stack.lora_A[0], "lora_B": stack.lora_B[0]})
h = torch.randn(3, 6)
print("one adapter, w = 1, equals LoRALinear:", torch.allclose(stack(h, torch.ones(3)), ref(h), atol=1e-6))
print("w = 0 is the original layer:         ", torch.allclose(stack(h, torch.zeros(3)), stack.base(h), atol=1e-6))

# %% [markdown]
# **The score's sign, fixed by construction.** The layer scores are standardised as
# $v_\ell = 1 + (s_\ell - \min_{\rm fit}s_\ell)/\mathrm{sd}_{\rm fit}(s_\ell)$, so every forget-set vector has $v \ge 1$.
# A linear one-class SVM separates the data from the origin with $w = \sum_i\alpha_i v_i$, $\alpha_i\ge 0$: every
# coordinate of $w$ is positive, so $u = w\cdot v$ grows with every layer's similarity. (Centring the scores instead, a
# z-score, puts the origin inside the data and the linear SVM degenerates to $w \approx 0$.)

# %%
print(inspect.getsource(o3.SimilarityScore))

# %% [markdown]
# ## The algorithm's loop
#
# For each request: train its detector on the forget set (keeping a held-out part for $m_2, \sigma_2$), then its
# adapter with the earlier adapters frozen and loaded.

# %%
print(inspect.getsource(o3.o3_unlearning))
print(inspect.getsource(o3.train_unlearning_adapter))

# %% [markdown]
# Run it on a tiny case: a base MLP trained for 10 epochs, then one request, "forget class 0", with short training.

# %%
data = o3.load_digits(p.test_size, seed, "cpu")
tiny_base = o3.train_base(data, 10, torch.Generator().manual_seed(seed))
tiny = o3.o3_unlearning(tiny_base, [data.x_train[data.y_train == 0]], o3.AdapterConfig(epochs=20),
                        o3.DetectorConfig(epochs=5), torch.Generator().manual_seed(seed))
w_test = tiny.weight(data.x_test)
pred_base, pred_o3 = tiny_base(data.x_test).argmax(1), tiny.logits(data.x_test).argmax(1)
zero = data.y_test == 0
for name, pred in [("original", pred_base), ("O3", pred_o3)]:
    print(f"{name:8s} accuracy: class 0 {(pred[zero] == 0).float().mean():.2f}, "
          f"classes 1-9 {(pred[~zero] == data.y_test[~zero]).float().mean():.2f}")
print(f"mean w: class 0 {w_test[zero].mean():.2f}, classes 1-9 {w_test[~zero].mean():.2f}")

# %% [markdown]
# ## The data
#
# scikit-learn's digits: 1797 grey 8×8 images, pixels scaled to $[0, 1]$, a stratified 70/30 train/test split per seed.
# Request $t$ hands over the **training** images of class $t-1$ only. All accuracies below are on the **test** images:
# the forgotten classes' test images play the paper's "DU" (the forget distribution), the other classes' test images
# its "RD" (retained data); the forget sets' own training images are "SU".

# %% tags=["nbval-check-output"]
sizes = [int((data.y_train == c).sum()) for c in range(p.n_requests)]
print(f"train {len(data.y_train)} images, test {len(data.y_test)}; requests forget classes {list(range(p.n_requests))}")
print(f"forget-set sizes (train images): {sizes}; each detector holds out {p.held_out:.0%} of its set for (m2, sigma2)")

# %%
import plotly.graph_objects as go
from plotly.subplots import make_subplots

fig = make_subplots(rows=1, cols=6, horizontal_spacing=0.02)
for i in range(6):
    img = data.x_test[data.y_test == i % 3][i // 3].reshape(8, 8).numpy()
    fig.add_trace(go.Heatmap(z=img[::-1], colorscale="Greys", showscale=False), 1, i + 1)
fig.update_xaxes(visible=False)
fig.update_yaxes(visible=False)
fig.update_layout(title="Test images of the classes forgotten at the quick preset (0, 1, 2)", height=220)
fig

# %% [markdown]
# ## Train: O3, its ablations and two baselines

# %%
Markdown(
    f"Per seed ({p.n_seeds} seeds): a base MLP ({p.base_epochs} epochs, Adam 1e-3), then {p.n_requests} requests. "
    f"Each request trains a detector (rank-{p.rank} LoRA on the hidden layers, {p.detector_epochs} epochs, "
    f"{p.mask_prob:.0%} pixels masked) and an unlearning adapter (rank {p.rank}, α = {p.alpha:g}, Adam {p.lr:g}, "
    f"{p.adapter_epochs} epochs on the forget set with random labels, λ_o = {p.orthogonal_weight:g}). Arms: **O3** (soft "
    f"gate); **always-on adapter** (the same random-label adapters trained with λ_o = 0, loaded with w = 1); **gradient "
    f"ascent** (the whole model, Adam {p.ga_lr:g}, stopped when the forget set's training images are at chance); and "
    f"the ablations **O3, hard gate** (w ≥ ½ → 1, else 0) and **O3 without orthogonality** (λ_o = 0, soft gate). The "
    "card's epochs were kept; they were not pre-run, and this is what they give."
)

# %%
result = o3.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary(3))

# %% [markdown]
# ## What happened
#
# **Retained classes.** The gated arms stay on the original model's line; the always-on adapter and gradient ascent
# fall, although they saw only forget-class images.

# %%
result.figures["retained_acc"]

# %% [markdown]
# **Forgotten classes.** All arms start at the original model's accuracy on class 0. Gradient ascent drives the forget
# classes to zero; the adapters only part of the way.

# %%
result.figures["forget_acc"]

# %% [markdown]
# **Does a later request undo an earlier one?** O3's accuracy on each forgotten class after each request (mean over
# seeds): a class can come back after the *next* adapter is trained, though no one asked for it.

# %%
result.figures["forget_per_class"]

# %% [markdown]
# **The gate.** The weight $w(x)$ after the last request: retained images sit at the floor $\mathrm{sigmoid}(-2)$;
# forgotten images spread between about 0.4 and 1.

# %%
result.figures["weights"]

# %%
result.figures["weight_curve"]

# %% [markdown]
# **Orthogonality.** $\|A_iA_j^\top\|_F$ between the adapters (summed over layers), with and without the penalty.

# %%
result.figures["overlap"]

# %% [markdown]
# The detectors and the gate, per seed (these numbers move a little between CPUs, so they are not checked):

# %%
for s in result.extras["seeds"]:
    aurocs = ", ".join(f"{d.auroc:.3f}" for d in s.detectors)
    fin = s.final("o3")
    print(f"seed {s.seed}: detector AUROC (own class vs never-forgotten classes) {aurocs}; gate AUROC {s.gate_auroc:.3f}; "
          f"mean w forgotten {fin.w_forget:.2f}, retained {fin.w_retained:.2f}")
rows = {a.arm.label: (np.mean(a.forget), np.mean(a.retained)) for a in result.extras["arms"]}
print("\nafter the last request, mean over seeds (points):")
for name, (f, r) in rows.items():
    print(f"  {name:26s} forgotten {f:5.1f}   retained {r:5.1f}")

# %% [markdown]
# ## The claim check
#
# Each claim compares one number per seed with a margin fixed in the code before the run (the card's margins, in
# accuracy points, after the last request) and gives a three-way verdict from the 95% t-interval over seeds:
#
# - **Headline** (the paper: O3 preserves utility without retained data): O3's retained-class accuracy minus the
#   original model's, margin −3 points.
# - **Supporting**: O3 minus the always-on adapter on retained classes, margin +5 points; O3's accuracy on the
#   forgotten classes, at most 30% (chance is 10%).
#
# The verdicts (checked by nbval on any CPU):

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(f"[{c.verdict.label}] ({c.kind}) {c.claim}")

# %% [markdown]
# The intervals behind them (the random-label training is chaotic: the per-seed forget accuracies move by several
# points between CPU kernels, so this cell is not checked):

# %%
for c in result.claims:
    print(c)

# %%
m, x = result.metrics, result.extras
head, gate_claim, forget = result.claims
seeds = x["seeds"]
last = p.n_requests
arms = {a.arm.key: a for a in x["arms"]}


def mean_eval(arm, request, field):
    return float(np.mean([getattr(e, field) for s in seeds for e in s.evals if e.arm == arm and e.request == request]))


first_forget = [100 * e.forget_acc for s in seeds for e in s.evals if e.arm == "o3" and e.request == 1]
su_always = mean_eval("always_on", 1, "forget_train_acc")
back = [max(e.forget_class_acc[0] for e in s.evals if e.arm == "o3" and e.request > 1) for s in seeds] if last > 1 else []
n_back = sum(b > 0.5 for b in back)
Markdown(
    f"**What showed at the {result.preset} preset** (read from this run). Headline, retained classes within 3 points "
    f"of the original model: **{head.verdict.value}** (O3 − original {fmt(head.interval.mean, 1, sign=True)} points, "
    f"95% interval [{fmt(head.interval.low, 1, sign=True)}, {fmt(head.interval.high, 1, sign=True)}]). The gate is what "
    f"does it: with the same adapters always on, retained accuracy is {fmt(np.mean(arms['always_on'].retained), 1)}% "
    f"against O3's {fmt(np.mean(arms['o3'].retained), 1)}% (claim: **{gate_claim.verdict.value}**); gradient ascent "
    f"keeps {fmt(np.mean(arms['ga'].retained), 1)}%.\n\n"
    f"The other half of the paper's claim does **not** show cleanly: O3's accuracy on the forgotten classes after "
    f"{last} requests is {fmt(forget.interval.mean, 1)}% (95% interval [{fmt(forget.interval.low, 1)}, "
    f"{fmt(forget.interval.high, 1)}], margin ≤ 30%: **{forget.verdict.value}**). Why, in the order the card suggests:\n\n"
    f"1. *The detector is not the problem.* Its AUROC (own class against never-forgotten classes) is "
    f"{fmt(m['detector_auroc_mean'], 3)} on average, the combined gate's {fmt(m['gate_auroc'], 3)}.\n"
    f"2. *The weight on forgotten images is not always 1.* It averages {fmt(m['w_forget_o3'], 2)} (retained: "
    f"{fmt(m['w_retained_o3'], 2)}, the floor): most forgotten test images get w ≈ 1, a tail gets less (the "
    f"histogram; $w$ is near 1 only from about $m_2 - \\sigma_2$ to $m_1 + \\sigma_2$, with $m_2, \\sigma_2$ fitted on {round(p.held_out * np.mean(sizes))} held-out images). "
    f"What the tail costs: the λ_o = 0 adapters fully loaded leave {fmt(np.mean(arms['always_on'].forget), 1)}% "
    f"of the forgotten classes right (always-on), under the soft gate {fmt(np.mean(arms['no_orth'].forget), 1)}%; "
    f"the hard gate on O3's adapters gives {fmt(np.mean(arms['hard_gate'].forget), 1)}% against O3's "
    f"{fmt(np.mean(arms['o3'].forget), 1)}%.\n"
    f"3. *The adapters do not finish the job.* After the first request, even fully loaded, the forget set's own "
    f"training images are still {fmt(100 * su_always, 1)}% right (a model that had memorised the random labels would "
    f"sit near 10%, the share of random labels that hit the true class): {p.adapter_epochs} epochs underfit. O3 after "
    f"one request: {', '.join(fmt(v, 1) for v in first_forget)}% on class 0 per seed.\n"
    + (f"4. *A later adapter can undo an earlier one.* Class 0 climbed back above 50% after a later request in "
       f"{n_back} of {len(seeds)} seeds (see the per-class plot): the new adapter is trained on the new forget set "
       "with the old ones loaded, nothing holds the old forget set down (its data is gone), and orthogonal "
       "down-projections do not stop the interference, since each adapter changes the next layer's input.\n"
       if last > 1 else "")
)

# %% [markdown]
# What this toy does **not** show: the paper's evidence is a LLaMA-2-7B on ScienceQA (5 subjects in sequence) and TOFU,
# with a RoBERTa-large detector; its random labels are the multiple-choice options, so "random" is a few options, not
# ten classes. The card's full preset (a tiny GPT on templated multiple-choice questions) is not implemented; here every
# preset runs the digits toy (standard: 5 requests, 5 seeds). The score's sign and the standardisation are labkit's
# choices (see the top); the Mahalanobis term uses a Ledoit–Wolf covariance because each forget set here has fewer
# images than the features have dimensions (128), where the code's empirical covariance is singular
# (`covariance="empirical"` switches back).

# %% [markdown]
# ## Try it
#
# Change $\lambda_o$, the SVM's $\nu$, the weight's constants $k$ and $c$ (the floor is $\mathrm{sigmoid}(-c)$) or the
# number of requests, then Train. The plot shows the retained-class accuracy of each arm after each request.

# %%
import widgets

widgets.explorer("o3_unlearning", metric="retained_acc")

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
# # 07 · EnsLoss — EnsLoss: Stochastic Calibrated Loss Ensembles for Preventing Overfitting in Classification
#
# [arXiv 2409.00908](https://arxiv.org/abs/2409.00908) (ICML 2025) · family: **federated-robustness**
#
# **What you will see:** an over-parameterised MLP on label-noisy data reaches 100% training accuracy with every
# loss; drawing a fresh random convex, calibrated loss derivative at each SGD step (EnsLoss) overfits a little less.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
lr = None             # SGD learning rate (cosine-decayed to 0)
epochs = None         # training epochs per loss
n_seeds = None        # repeats: new data, split, init and batch order (shared by the losses)
boxcox_lambda = None  # Box-Cox λ of the derivative family: 0 → −g is log-normal
clip = None           # lower bound on a drawn derivative (−1 in the paper)
width = None          # hidden units per MLP layer
depth = None          # hidden layers (ReLU + BatchNorm)
signal_scale = None   # simulator signal, smaller means noisier labels; 2 gives a Bayes accuracy near 0.8
n = None              # simulator samples (70% train, a fifth of it validation; 30% test)

# %%
import inspect

import numpy as np
import torch

from IPython.display import Markdown

from labkit import viz
from labkit.core import overrides_from, resolve_params
from labkit.data import tabular
from labkit.methods import ensloss

overrides = overrides_from(ensloss.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# Binary labels $y \in \{-1, +1\}$, a score $f(x)$, the margin $z = y\,f(x)$. We train by minimising a surrogate
# $\frac1B\sum_b \phi(z_b)$: logistic/BCE $\phi(z) = \log(1 + e^{-z})$, hinge $\max(0, 1 - z)$, exponential $e^{-z}$,
# focal $\sigma(-z)^\gamma \log(1 + e^{-z})$… A convex $\phi$ is **calibrated** (minimising it also minimises the
# error rate) iff $\phi'(0) < 0$. Which calibrated loss generalises best depends on the data.
#
# SGD never looks at $\phi$ itself, only at the derivatives at the batch's margins:
# $\nabla \frac1B\sum_b \phi(z_b) = \frac1B\sum_b \phi'(z_b)\,\nabla z_b$. EnsLoss therefore draws those derivatives
# **at random** at every step, under the conditions that make some convex calibrated loss have exactly them:
#
# * convex $\Leftrightarrow$ $\phi'$ non-decreasing in $z$: give the $k$-th smallest draw to the $k$-th smallest margin;
# * calibrated $\Leftrightarrow$ $\phi'(0) < 0$: all draws strictly negative;
# * bounded below: the derivative must vanish fast for large margins: divide by $z$ where $z > 1$.
#
# One step: $\xi_b \sim \mathcal N(0, 1)$, $u_b = -\mathrm{BC}^{-1}_\lambda(\xi_b)$ with $\mathrm{BC}^{-1}_0(\xi) = e^{\xi}$
# (so $-u$ is log-normal) and $\mathrm{BC}^{-1}_\lambda(\xi) = \max(1 + \lambda\xi, 0)^{1/\lambda}$; sort, clip at
# $-1$, assign by margin rank, rescale the tail, subtract $10^{-6}$. Then descend on
#
# $$J = \frac1B \sum_b \operatorname{stopgrad}(g_b)\, z_b, \qquad \nabla J = \frac1B\sum_b g_b\,\nabla z_b .$$
#
# A new random loss every step, like Dropout draws a new network every step: an ensemble of losses in one run.

# %% [markdown]
# ## The core functions, on a batch you can check by hand

# %%
print(inspect.getsource(ensloss.ensloss_derivatives))
print(inspect.getsource(ensloss.ensloss_surrogate))

# %% [markdown]
# Four margins $z = (2, -1, 0.5, 4)$ and the generator seeded with 0, whose four normal draws are printed first.
# $-e^{\xi}$ sorted is $(-4.67, -1.77, -0.746, -0.113)$; clipped at $-1$: $(-1, -1, -0.746, -0.113)$. The margins in
# increasing order are $-1, 0.5, 2, 4$, so they get those values in that order, and $z = 2$, $z = 4$ are divided by
# $z$: $g = (-0.746/2,\; -1,\; -1,\; -0.113/4) = (-0.373, -1, -1, -0.028)$. The surrogate's gradient with respect
# to each margin is $g_b / B$.

# %% tags=["nbval-check-output"]
gen = torch.Generator().manual_seed(0)
print("xi =", np.round(torch.randn(4, generator=torch.Generator().manual_seed(0)).numpy(), 4))
z = torch.tensor([2.0, -1.0, 0.5, 4.0], requires_grad=True)
g = ensloss.ensloss_derivatives(z, gen)
print("g  =", np.round(g.numpy(), 4))
ensloss.ensloss_surrogate(z, g).backward()
print("dJ/dz =", np.round(z.grad.numpy(), 4), " (= g / 4)")
z0 = torch.tensor([0.0])
print(f"at z = 0: BCE {ensloss.bce_margin_loss(z0):.4f} (log 2 = {np.log(2):.4f}), hinge {ensloss.hinge_loss(z0):.1f}, "
      f"exponential {ensloss.exponential_loss(z0):.1f}, focal {ensloss.focal_loss(z0):.4f} (log 2 / 4)")

# %% [markdown]
# ## The algorithm: one epoch of doubly stochastic SGD
#
# The loop the paper describes: shuffled batches (the first source of randomness), and for EnsLoss a fresh random
# loss at every step (the second). A fixed loss uses the same loop with its own $\phi$. A non-finite objective stops
# the epoch before the update, so a diverging loss is caught and reported, not trained on.

# %%
print(inspect.getsource(ensloss.sgd_epoch))

# %% [markdown]
# On a tiny case: a linear score on 40 points with labels alternating 0/1, batches of 16 (two steps, the last 8
# points dropped). The first batch's derivatives, ordered by margin, never decrease and are all negative: the
# derivatives of a convex, calibrated loss.

# %% tags=["nbval-check-output"]
torch.manual_seed(0)
X_tiny, y_tiny = torch.randn(40, 3), (torch.arange(40) % 2).float()
tiny = torch.nn.Linear(3, 1)
stats = ensloss.sgd_epoch(tiny, torch.optim.SGD(tiny.parameters(), lr=0.1), X_tiny, y_tiny, loss="ensloss",
                          batch_size=16, order=torch.Generator().manual_seed(0), draws=torch.Generator().manual_seed(1))
z_first, g_first = stats.first_draw
g_by_margin = g_first[np.argsort(z_first)]
print(f"steps {stats.steps}, diverged {stats.diverged}; first batch: {len(g_first)} derivatives, "
      f"all negative {bool((g_first < 0).all())}, non-decreasing in z {bool((np.diff(g_by_margin) >= 0).all())}")

# %% [markdown]
# ## The data: the paper's label-noisy simulator
#
# $x \sim \mathcal N(0, I_d)$, score $s(x) = \sum_j \mathrm{relu}(x_j)$, standardised, times 2 (`signal_scale`),
# clipped to $[-5, 5]$; $y \sim \mathrm{Bernoulli}(\sigma(s))$. Even the Bayes rule $1[s > 0]$ is wrong about one time
# in five, so a network that fits the training set perfectly has memorised a lot of noise. Each seed draws new data
# and a new stratified 70/30 split; a fifth of the training part is held out as **validation** (used only to choose
# the epoch of the early-stopped accuracy below, never the test set); features are standardised with the training
# statistics.

# %% tags=["nbval-check-output"]
p = resolve_params(ensloss.PARAMS, preset, overrides)  # the values the run below will use
X, y, prob = tabular.relu_sum_classification(p["n"], p["d"], seed=seed, scale=p["signal_scale"])
split = tabular.standardize_split(X, y, seed=seed, val_size=ensloss.VAL_FRACTION)
print(f"n = {p['n']}, d = {p['d']}: {len(split.y_train)} train / {len(split.y_val)} validation / "
      f"{len(split.y_test)} test, {y.mean():.1%} positive")
print(f"Bayes accuracy (mean of max(p, 1 - p)): {tabular.bayes_accuracy(prob):.3f}")

# %%
score = tabular.relu_sum_score(X, p["signal_scale"])
order = np.argsort(score)
viz.lines(score[order], {"P(y = 1 | x)": prob[order], "observed y": y[order]}, mode="markers",
          title="Labels against the true score: the noise every loss has to live with", xlabel="s(x)",
          ylabel="probability / label")

# %% [markdown]
# ## Train the losses side by side
#
# The same MLP, initialisation, batches and schedule for every loss; only the loss differs (the values below are
# this run's, from the parameters).

# %%
arms = ensloss.arms_of(p["losses"])
Markdown(
    f"Losses: {', '.join(a.label for a in arms)}. MLP with {p['depth']} hidden layers of {p['width']} units "
    f"(ReLU + BatchNorm, one logit); SGD with momentum {p['momentum']:g}, learning rate {p['lr']:g} cosine-decayed "
    f"to 0 over {p['epochs']} epochs, weight decay {p['weight_decay']:g}, batches of {p['batch_size']} (the last "
    f"incomplete batch dropped); {p['n_seeds']} seeds, each with new data, split, initialisation and batch order. "
    "The standard preset adds the exponential and focal losses, a larger simulator and breast cancer with "
    f"{p['flip']:.0%} flipped training labels; the full preset (GPU) adds pairs of digit classes with a small CNN."
)

# %%
result = ensloss.run(preset=preset, seed=seed, device=device, **overrides)
print(f"{result.duration_s:.1f} s on {result.device}")

# %% [markdown]
# ## What happened
#
# **The overfitting picture.** Training accuracy (dotted; running over each epoch's batches) reaches 100% for
# every loss; test accuracy (solid) peaks early and then drifts down as the network memorises the noisy labels.
# Bands are ±1 std over seeds.

# %%
result.figures["accuracy"]

# %%
result.figures["final_test_acc"]

# %%
result.figures["early_stop_test_acc"]

# %% [markdown]
# **The random derivatives.** One batch of margins from EnsLoss training (first seed, a few epochs in): the derivatives
# that step drew (draw 1) and two fresh draws on the same margins. Each is negative and non-decreasing in $z$, about
# half of them sit at the clip $-1$ (where $e^{\xi} \ge 1$), and they shrink like $1/z$ beyond $z = 1$. BCE's
# derivative $-\sigma(-z)$ is one fixed curve through the same region. Later in training most margins exceed 1; the
# clipped half of the batch then gets exactly $-1/z$ and the randomness lives in the upper half.

# %%
result.figures["derivatives"]

# %% [markdown]
# Integrating a draw gives the loss it implies on this batch, $\phi(z) = \int_z^{z_{\max}} -g$: convex, decreasing,
# different at every step. Hinge-like on the left (slope $-1$), with a flatter, random right part.

# %%
result.figures["implied_loss"]

# %% [markdown]
# ## The claim check
#
# The paper's statement is that EnsLoss generalises **better** than the fixed losses (on CIFAR-10 pairs: better than
# BCE on 41 of 45 tasks for ResNet34, and on every task than the exponential loss). So each claim is "EnsLoss minus
# the fixed loss, in points of test accuracy, per seed" against a margin of **0**, with a three-way verdict from the
# 95% t-interval over seeds: *holds* (the interval is above 0), *does not hold* (below), *inconclusive* (it
# straddles 0). The headline is BCE's final test accuracy, the paper's main comparison. The last claim compares
# **early-stopped** accuracy: each arm's test accuracy at the epoch where its *validation* accuracy peaked. A loss
# that diverges is marked DIVERGED in its claim, and that claim is then inconclusive.

# %%
for c in result.claims:
    print(c)

# %% [markdown]
# The claims above print their intervals at 0.1 point, the resolution of the test set (one of 450 test examples is
# 0.22 point). They are **not** compared across machines: the CPU's kernels (`ATEN_CPU_CAPABILITY`) and thread count
# change the floating-point sums, and after 60 epochs that moves a test example or two per seed
# (`benchmarks/spread/ensloss.json`). A verdict whose interval ends within a test example of the margin can flip with
# them too: at the quick preset the hinge claim's lower end sat at +0.0 to +0.1 point across kernels (a claim on its
# margin). What this notebook checks on every machine is the headline's verdict:

# %% tags=["nbval-check-output"]
print(f"[{result.headline.verdict.label}] ({result.headline.kind}) {result.headline.claim}")

# %% [markdown]
# The per-seed numbers behind the claims, and the paper's per-task count, "better / tie / worse" from a paired
# t-test over seeds (p < 0.05).

# %%
print(result.extras["per_seed"].drop(columns="task").round(3).to_string(index=False))
print("\npaired t-test over seeds, per task:", result.extras["paired"])

# %%
head = result.headline
n_seeds_run = len(head.values)
all_fit = bool((result.extras["per_seed"]["final_train_acc"] > 0.99).all())
diverged = {a.label: int(result.metrics[f"diverged_runs_{a.key}"]) for a in arms if result.metrics[f"diverged_runs_{a.key}"]}
Markdown(
    f"**What showed in this run** ({result.preset} preset, {n_seeds_run} seeds): the headline, EnsLoss better than BCE "
    f"at the last epoch, is **{head.verdict.value}** (mean {head.interval.mean:+.1f} points, 95% interval "
    f"[{head.interval.low:+.1f}, {head.interval.high:+.1f}]). "
    + " ".join(f"{c.claim.replace('EnsLoss generalises better than ', 'Versus ')}: **{c.verdict.value}**."
               for c in result.claims[1:])
    + (" Every arm fits its training set (≥ 99% training accuracy), the over-parameterised regime of the paper's toy."
       if all_fit else " Not every arm fits its training set, so this is not the paper's over-parameterised regime.")
    + (f" Diverged runs: {diverged}." if diverged else " No arm diverged.")
)

# %% [markdown]
# **How to read it.** With three seeds the 95% interval is wide (the t-quantile is 4.3): a gain of about one point,
# the size of the seed-to-seed noise, cannot clear a margin of 0 unless every seed agrees closely, so an
# *inconclusive* headline here means "not shown at this scale", not "refuted". The paper's own tabular gains are of
# this size (Bioresponse, MLP(3): accuracy 0.778 vs BCE 0.782, AUC 0.852 vs 0.850), and it reports most tabular
# comparisons with BCE as better or tied on 5–10 repeats. The standard preset runs 10 seeds, adds the exponential and
# focal losses (the exponential loss can diverge at this learning rate: such runs are marked, not hidden) and two
# more tasks; `result.extras["paired"]` then gives the paper's better / tie / worse count per task.
#
# What this toy does **not** show: the paper's 45 CIFAR-10 class pairs with ResNets and 14 OpenML sets.

# %% [markdown]
# ## Try it
#
# Change the Box-Cox $\lambda$, the clip, the label noise (`signal_scale`), the network and the schedule, then Train.
# The plot shows each loss's test accuracy per epoch while it trains.

# %%
import widgets

widgets.explorer("ensloss", metric="test_acc")

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
n = None              # simulator samples (70% train / 30% test)

# %%
import inspect

import numpy as np
import torch

import widgets
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
# ## The data: the paper's label-noisy simulator
#
# $x \sim \mathcal N(0, I_d)$, score $s(x) = \sum_j \mathrm{relu}(x_j)$, standardised, times 2 (`signal_scale`),
# clipped to $[-5, 5]$; $y \sim \mathrm{Bernoulli}(\sigma(s))$. Even the Bayes rule $1[s > 0]$ is wrong about one time
# in five, so a network that fits the training set perfectly has memorised a lot of noise. Each seed draws new data
# and a new stratified 70/30 split; features are standardised with the training statistics.

# %% tags=["nbval-check-output"]
p = resolve_params(ensloss.PARAMS, preset, overrides)  # the values the run below will use
X, y, prob = tabular.relu_sum_classification(p["n"], p["d"], seed=seed, scale=p["signal_scale"])
split = tabular.standardize_split(X, y, seed=seed)
print(f"n = {p['n']}, d = {p['d']}: {len(split.y_train)} train / {len(split.y_test)} test, "
      f"{y.mean():.1%} positive")
print(f"Bayes accuracy (mean of max(p, 1 - p)): {tabular.bayes_accuracy(prob):.3f}")

# %%
score = tabular.relu_sum_score(X, p["signal_scale"])
order = np.argsort(score)
viz.lines(score[order], {"P(y = 1 | x)": prob[order], "observed y": y[order]}, mode="markers",
          title="Labels against the true score: the noise every loss has to live with", xlabel="s(x)",
          ylabel="probability / label")

# %% [markdown]
# ## Train BCE, hinge and EnsLoss
#
# The same MLP (`depth` × `width`, ReLU + BatchNorm, one logit), initialisation, batches (128, last incomplete batch
# dropped) and schedule for every loss: SGD with momentum 0.9, weight decay 5e-6, cosine decay over the epochs.
# Only the loss differs. Repeated for `n_seeds` seeds. The standard preset adds the exponential and focal
# losses, a larger simulator and breast cancer with 20% flipped training labels; the full preset (GPU) adds
# nine pairs of digit classes (20% flipped training labels) with a small CNN.

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
result.figures["best_test_acc"]

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
# The card's claim at teaching scale, mean over the seeds of test accuracy: EnsLoss's final accuracy is at least
# hinge's + 1 point and at least BCE's − 0.5 point, and its best-epoch accuracy is at least BCE's + 1 point. The
# second line is reported, not asserted: the paper's "better / tie / worse" count with a paired t-test over seeds.

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)
print()
print(result.extras["per_seed"].drop(columns="task").round(3).to_string(index=False))

# %% [markdown]
# **What showed at the quick preset** (read the numbers above): the asserted claim holds on the means, but only
# by about one point, which is also the size of the seed-to-seed noise. Per seed it is not uniform: in one of the
# three seeds EnsLoss ends slightly below both BCE and hinge. With three seeds the paired t-test calls both
# comparisons a tie, so at this scale the honest reading is "EnsLoss is at least as good as BCE and hinge, and
# its best epoch is better", not "significantly better". All losses reach 100% training accuracy, as the card's
# toy claim assumes.
#
# More seeds shrink the gap. When we ran the standard preset once (10 seeds, seed 0, CPU), the asserted claim did
# **not** hold on the simulator: EnsLoss was ahead of hinge by 0.6 point and of BCE by 0.2 point (final), and by
# 0.8 point at the best epoch, all inside the seed noise; over its three tasks the paired t-test found EnsLoss
# never worse than BCE (3 ties), better than hinge once, and worse than focal once (breast cancer). The
# exponential loss diverged at this learning rate in 10 of its 20 runs on the larger simulator and on breast
# cancer; the run reports those instead of hiding them. Run the standard preset yourself to see the table.
#
# What this toy does **not** show: the paper's 45 CIFAR-10 class pairs with ResNets and 14 OpenML sets.

# %% [markdown]
# ## Try it
#
# Change the Box-Cox $\lambda$, the clip, the label noise (`signal_scale`), the network and the schedule, then Train.
# The plot shows each loss's test accuracy per epoch while it trains.

# %%
widgets.explorer("ensloss", metric="test_acc")

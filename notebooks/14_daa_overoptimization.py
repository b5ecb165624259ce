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
# # 14 · DAA overoptimization — Scaling Laws for Reward Model Overoptimization in Direct Alignment Algorithms
#
# [arXiv 2406.02900](https://arxiv.org/abs/2406.02900) (NeurIPS 2024) · family: **alignment**
#
# **What you will see:** DPO, IPO and SLiC, each trained at several β on a toy where length is a spurious feature;
# the gold reward against √KL rises, peaks and falls (the hump), and Gao et al.'s law $d(\alpha - \beta_s\log d)$ fits it.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
objective = None  # which DAA losses to train: all, dpo, ipo or slic
betas = None      # comma-separated beta values, small beta is a large KL budget
lr = None         # Adam learning rate
n_pairs = None    # preference pairs drawn from pi_ref x pi_ref over all prompts
gold_peak = None  # the length at which the gold reward peaks

# %%
import inspect

import numpy as np
import torch

import widgets
from labkit import viz
from labkit.core import overrides_from, resolve_params
from labkit.substrates.preference import ipo_loss
from labkit.methods import daa_overoptimization as daa

overrides = overrides_from(daa.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# Direct alignment algorithms (DAAs) train the policy $\pi_\theta$ on preference pairs $(x, y_w \succ y_l)$ without a
# reward model. With the implicit-reward margin (sequence log-probabilities **summed** over tokens)
#
# $$h_\theta = \log\frac{\pi_\theta(y_w|x)}{\pi_{\rm ref}(y_w|x)} - \log\frac{\pi_\theta(y_l|x)}{\pi_{\rm ref}(y_l|x)},$$
#
# the paper writes all three as one loss $\mathcal L(\theta) = \mathbb E_D\,[\,g(\beta\,h_\theta)\,]$ with
#
# | DAA | $g(z)$ | TRL `loss_type` |
# | --- | --- | --- |
# | DPO | $-\log\sigma(z)$ | `"sigmoid"` |
# | IPO | $(z-1)^2$ | `"ipo"` (a different scale, see below) |
# | SLiC | $\max(0, 1-z)$ | `"hinge"` |
#
# There is no reward model to hack, yet they still **over-optimise**: the implicit reward $\beta\log\pi_\theta/\pi_{\rm ref}$
# is only pinned down on the responses the data covers, so the policy can follow a spurious feature (length) out of
# that range. The paper measures a gold score at many checkpoints against the distance from the reference,
# $d = \sqrt{D_{\rm KL}(\pi_\theta\|\pi_{\rm ref})}$, and fits the law Gao et al. found for RLHF,
#
# $$R(d) = d\,(\alpha - \beta_s \log d), \qquad R = \text{gold}(\pi_\theta) - \text{gold}(\pi_{\rm ref}),$$
#
# a hump that peaks at $d^\star = e^{\alpha/\beta_s - 1}$. The fit is linear in $(\alpha, \beta_s)$: least squares on the
# design $[d,\,-d\log d]$.

# %% [markdown]
# ## The loss, and a case you can check by hand
#
# `daa_g` is the paper's $g$; `daa_objective` applies it to $\beta h$ and returns one loss per pair.

# %%
print(inspect.getsource(daa.daa_g))
print(inspect.getsource(daa.daa_objective))

# %% [markdown]
# One pair with $\beta = 0.5$: $\log\pi(y_w) = -1$, $\log\pi(y_l) = -3$, both reference log-probs $-2$, so
# $h = 1 - (-1) = 2$ and $z = \beta h = 1$. Then DPO gives $\log(1 + e^{-1}) \approx 0.313$, IPO $(1 - 1)^2 = 0$ (the
# margin sits exactly on its target $1/\beta = 2$) and SLiC $\max(0, 1 - 1) = 0$ (the hinge is just satisfied).
#
# **Which IPO.** This notebook uses the paper's $(\beta h - 1)^2 = \beta^2 (h - 1/\beta)^2$, target $1/\beta$, with summed
# log-probs, so that all three share one $g(\beta h)$ and one β axis. TRL's `"ipo"` (and `labkit.substrates.preference.ipo_loss`)
# is $(h - 1/(2\beta))^2$, target $1/(2\beta)$, and TRL also averages log-probs per token. The last line checks that the
# paper's IPO at β is exactly $\beta^2\times$ the TRL-convention IPO at β/2; under Adam the constant $\beta^2$ barely
# matters, so our β behaves like TRL's β/2 (summed log-probs).

# %% tags=["nbval-check-output"]
pair = (torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))
for kind, hand in (("dpo", np.log1p(np.exp(-1.0))), ("ipo", 0.0), ("slic", 0.0)):
    print(f"{kind:4s} loss {daa.daa_objective(kind, *pair, beta=0.5).item():.3f}  (hand: {hand:.3f})")
print(f"paper IPO at beta 0.1: {daa.daa_objective('ipo', *pair, beta=0.1).item():.3f} = "
      f"0.1^2 x TRL-convention IPO at beta 0.05: {0.01 * ipo_loss(*pair, beta=0.05).item():.3f}")

# %% [markdown]
# And the law on points with known parameters: generate $R(d)$ with $\alpha = 1.2$, $\beta_s = 0.5$ plus a little
# noise, fit, and read the parameters back (the peak should sit near $e^{1.2/0.5 - 1} \approx 4.06$).

# %% tags=["nbval-check-output"]
d = np.linspace(0.1, 3.0, 30)
noisy = daa.scaling_law(d, 1.2, 0.5) + np.random.default_rng(0).normal(0, 0.05, d.size)
fit = daa.fit_scaling_law(d, noisy)
print(f"alpha {fit['alpha']:.3f}, beta_s {fit['beta_s']:.3f}, R^2 {fit['r2']:.3f}, peak d* {fit['peak_d']:.3f}")

# %% [markdown]
# ## The data: a toy language where length is a trap
#
# $P = 32$ prompts, each with $M = 40$ candidate responses described by a length $\ell \in \{1,\dots,20\}$ and a content
# quality $q \sim \mathcal N(0,1)$. The reference policy writes short answers, $\pi_{\rm ref}(y|x) \propto
# \exp(-0.6\,\ell + 0.3\,q)$ (mean length ≈ 2.4); the hidden gold reward $r^*(x,y) = q + 2c\ell^\star\ell - c\ell^2$
# ($c = 0.06$) peaks at $\ell^\star = 5$. Pairs $y_1, y_2 \sim \pi_{\rm ref}$ (ties dropped) are labelled by
# Bradley–Terry on $r^*$: longer is usually better **inside the range the data covers**, and worse far beyond it.
#
# The policy is $\pi_\theta(y|x) \propto \pi_{\rm ref}(y|x)\,e^{f_\theta(\ell/20,\,q)}$ with $f_\theta$ linear (quick) or a small
# MLP (standard), its last layer zero so $\pi_\theta = \pi_{\rm ref}$ at step 0. Everything is exact: $\pi_\theta$ is a
# softmax over the 40 candidates, so KL (under the **policy**) and gold are sums, with no sampling noise.

# %% tags=["nbval-check-output"]
p = resolve_params(daa.PARAMS, preset, overrides)  # the values the run below will use
cands, pairs = daa.make_problem(seed, p["n_prompts"], p["n_candidates"], p["n_pairs"], p["gold_peak"])
ref_probs = cands.ref_logp.exp()
flat_len = cands.length.flatten()
long_pairs = ((flat_len[pairs.chosen] > 8) | (flat_len[pairs.rejected] > 8))[pairs.mask]
print(f"{p['n_prompts']} prompts x {p['n_candidates']} candidates; {int(pairs.mask.sum())} of {p['n_pairs']} "
      "pairs kept")
print(f"pi_ref: mean length {(ref_probs * cands.length).sum(-1).mean():.3f}, "
      f"gold {(ref_probs * cands.gold).sum(-1).mean():.3f}; pairs with a response longer than 8: "
      f"{int(long_pairs.sum())}")

# %%
lengths = np.arange(1, 21)
counts = np.bincount(torch.cat([flat_len[pairs.chosen[pairs.mask]], flat_len[pairs.rejected[pairs.mask]]]).long(),
                     minlength=21)[1:]
fig = viz.lines(lengths, {"responses in the pairs (count / 100)": counts / 100,
                          "gold reward at q = 0": [2 * 0.06 * p["gold_peak"] * l - 0.06 * l**2 for l in lengths]},
                mode="lines+markers", title="What the data covers (short) and where gold peaks", xlabel="length ℓ")
fig

# %% [markdown]
# ## Train DPO, IPO and SLiC at several β
#
# Nine runs at the quick preset (3 objectives × β ∈ {0.01, 0.1, 1}), the same pairs and batch order for all:
# Adam (lr 0.05), batches of 64 pairs, 2 epochs; exact KL and gold every 5 steps. Every run has its own parameters
# and they are trained as one tensor: the summed loss separates, so each gets exactly its own Adam update. The
# reference policy is the baseline: $R = 0$ by construction.

# %%
result = daa.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **The hump.** Every checkpoint of every run, gold gain against $\sqrt{\rm KL}$ (colour = β, marker = objective), with
# the law fitted per objective over all its β. Small β runs go furthest, past the peak.

# %%
result.figures["law"]

# %% tags=["nbval-check-output"]
for label, f in result.extras["fits"].items():
    print(f"{label:4s} fit: alpha {f['alpha']:.3f}, beta_s {f['beta_s']:.3f}, R^2 {f['r2']:.3f}, "
          f"peak at d* {f['peak_d']:.3f} (KL {f['peak_d'] ** 2:.3f}), {f['n_points']} points")

# %% [markdown]
# **During training.** Gold and KL against epochs (dotted line: the end of epoch 1).

# %%
result.figures["gold_progress"]

# %%
result.figures["kl_progress"]

# %% [markdown]
# **Per β.** Small β buys a large KL; the gold reward it reaches at its best checkpoint (dotted) is high, but where it
# ends (solid) is lower.

# %%
result.figures["gold_per_beta"]

# %%
result.figures["kl_per_beta"]

# %% [markdown]
# **Length exploitation.** The KL is spent on length: mean response length grows with KL, past the gold peak.

# %%
result.figures["length"]

# %%
result.figures["prompt"]

# %% tags=["nbval-check-output"]
m = result.metrics
print(f"pi_ref gold {m['gold_reference']:.3f}")
for name in result.extras["arms"]:
    key, h = name.replace(" β=", "_b").lower(), result.extras["humps"][name][0]
    print(f"{name:11s} peak gold {h['peak_gold']:.3f} at epoch {h['peak_epoch']:.3f} "
          f"(sqrt KL {np.sqrt(h['kl_peak']):.3f})"
          f"  final gold {m['gold_' + key]:.3f}  final KL {m['kl_' + key]:.3f}  final length {m['length_' + key]:.3f}")

# %% [markdown]
# ## The claim check
#
# The card's three statements, computed from the run above: (1) at the smallest β, for each of DPO, IPO and SLiC,
# peak gold − final gold ≥ 0.25 and the KL keeps growing after the peak; (2) the pooled DPO fit of
# $d(\alpha - \beta_s\log d)$ has $R^2 \ge 0.6$ with $\alpha, \beta_s > 0$ (points with $d < 0.05$ dropped); (3) at least one run
# peaks before the end of epoch 1 (our reading of "peaks": its best checkpoint is after step 0 and its gold then
# falls by at least 0.05).

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)
print("claims hold:", result.claims_hold)

# %% [markdown]
# **What showed at the quick preset** (read the numbers above): all three statements hold. At β = 0.01 all three
# objectives climb to the same peak gold, then lose a few tenths while their KL keeps growing and their mean length
# passes the gold peak. The law fits each objective's pooled checkpoints with $R^2$ well above 0.6.
#
# But $R^2$ is not the whole story: the fitted humps top out at $d^\star$ far beyond the data (compare `peak_d` and the
# fit table with the $\sqrt{\rm KL}$ at the observed peaks, about 1.4, in the table above). Most checkpoints lie on the
# rise, which the law follows well, while the turn in this toy is sharper than $d(\alpha - \beta_s\log d)$ can bend;
# the law describes the curve here, it does not locate its peak. (At the standard preset we saw the opposite error:
# the fitted peak came too early.)
#
# Two more caveats. First, the β = 0.01 humps peak at about 1.2–1.3 epochs, not inside the first epoch; the runs
# that do peak inside epoch 1 are the large-β ones (IPO and SLiC at β = 1), and there the KL *falls* again after the
# peak (see `earliest_kl_peak` / `earliest_kl_final`): that is the loss pulling the policy back, not over-optimisation
# along the KL axis. So the intra-epoch statement holds as the card words it, but its over-optimisation reading does
# not show at quick. Second, quick is mild (final gold stays above π_ref); the standard preset (MLP head, 1,500
# pairs, 20 epochs, 3 seeds) collapses far below π_ref at small β.
#
# Why the toy over-optimises: the pairs almost never contain long responses, and the linear head has no $\ell^2$ term,
# so the implicit reward it learns is "longer is better" everywhere. The card expects a head that *can* bend down
# (add $(\ell/20)^2$) to over-optimise less. The cell below trains that variant on the same data and prints the
# β = 0.01 drops next to the linear head's.
#
# What this toy does **not** show: GPT-4 win rates, TL;DR summaries and model sizes; the card's tiny-GPT full preset
# is not implemented (full runs this toy with the MLP head and more seeds).

# %% tags=["nbval-check-output"]
quad = daa.run(preset=preset, seed=seed, device=device, progress=False, **{**overrides, "head": "quadratic"})
low = min(daa.parse_betas(p["betas"]))
for label, res in (("linear", result), ("quadratic", quad)):
    drops = [f"{n.split()[0]} {h[0]['drop']:.3f}" for n, h in res.extras["humps"].items() if n.endswith(f"β={low:g}")]
    kls = [f"{res.metrics['kl_' + n.replace(' β=', '_b').lower()]:.3f}" for n in res.extras["arms"]
           if n.endswith(f"β={low:g}")]
    print(f"{label:9s} head, beta {low:g}: peak - final gold  {', '.join(drops)};  final KL {', '.join(kls)}")

# %% [markdown]
# **Read it honestly:** at the quick preset the quadratic head does *not* over-optimise less; its drops are larger.
# Adding a feature is not the same as knowing its sign: over lengths 1–5, where the pairs live, $\ell$ and $\ell^2$ are
# nearly collinear and the gold reward still rises, so the data do not force a negative curvature, and the policy
# can push length even faster. A likely reason, not a proof; the fix the card has in mind needs data (or a prior)
# that reaches the long responses.

# %% [markdown]
# ## Try it
#
# Change the objective, the β list, the learning rate, the number of pairs or the gold peak length, then Train.

# %%
widgets.explorer("daa_overoptimization", metric="gold_reward")

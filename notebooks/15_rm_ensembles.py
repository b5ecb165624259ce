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
# # 15 · RM ensembles — Reward Model Ensembles Help Mitigate Overoptimization
#
# [arXiv 2310.02743](https://arxiv.org/abs/2310.02743) (ICLR 2024; Coste et al.) · family: **alignment**
#
# **What you will see:** best-of-n against one learned reward model, and against the mean, the worst case (WCO) and an
# uncertainty-weighted (UWO) combination of five, on a toy with a known gold reward, with 25% and 0% label noise.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
lam = None        # UWO weight on the variance across members (best-of-n)
noise = None      # share of preference labels flipped
n_members = None  # ensemble size k
n_pairs = None    # preference pairs
max_n = None      # largest n of best-of-n

# %%
import inspect

import numpy as np
import pandas as pd
import torch

import widgets
from labkit import viz
from labkit.core import overrides_from, resolve_params
from labkit.substrates.rlhf import best_of_n_kl, unbiased_best_of_n
from labkit.methods import rm_ensembles as rme

overrides = overrides_from(rme.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# A reward model (RM) learned from preferences is only a proxy for the reward we care about (the "gold" reward).
# Optimising hard against it, by best-of-$n$ with a large $n$ or by a long RL run, finds responses where the proxy is
# wrong, and the gold reward falls: **over-optimisation**. Train $k$ RMs $R_1\dots R_k$ that differ only in their seed,
# standardise each over the policy's samples, and optimise a conservative combination:
#
# $$R_{\rm mean} = \tfrac1k\textstyle\sum_i R_i,\qquad R_{\rm WCO} = \min_i R_i,\qquad
# R_{\rm UWO} = R_{\rm mean} - \lambda\,\mathrm{Var}_i R_i .$$
#
# Where the members disagree (typically off the training distribution) the conservative score is low, so the
# optimiser does not go there. The variance is the population one ($1/k$) for best-of-$n$ (the paper's numpy BoN code)
# and the unbiased one ($1/(k-1)$) for PPO (its torch code); with $k = 5$ that changes $\lambda$'s effect by 25%.
#
# **Best-of-$n$** keeps the best of $n$ samples from the SFT policy by the combined score. Its KL from the SFT policy is
# $\mathrm{KL}_{\rm bon}(n) = \log n - (n-1)/n$, and its expected gold reward is estimated without bias from one pool of
# $N$ samples: sort the pool by the score ascending, gold $g_{(1)}\dots g_{(N)}$ in that order, then
#
# $$\mathbb E[\text{gold of best-of-}n] = \sum_{i=n}^{N} \frac{\binom{i-1}{n-1}}{\binom{N}{n}}\, g_{(i)}
# \qquad\text{(binomials in log space).}$$

# %% [markdown]
# ## The pieces, on cases you can check by hand

# %%
print(inspect.getsource(rme.objective_scores))
print(inspect.getsource(unbiased_best_of_n))

# %% [markdown]
# Two members scoring two responses, $S = [[1, 2], [3, 0]]$: the mean is $(2, 1)$, the minimum $(1, 0)$, the population
# variance $(1, 1)$ so UWO with $\lambda = 0.5$ gives $(1.5, 0.5)$ (unbiased variance $(2, 2)$: $(1, 0)$).
# A pool of three with gold $(3, 1, 2)$ and score $(0.1, 0.3, 0.2)$: sorted by score the gold reads $(3, 2, 1)$. Best of
# 1 is the pool mean 2; best of 3 always takes the top score, gold 1; best of 2 puts weight
# $\binom{1}{1}/\binom32 = 1/3$ on the second and $\binom21/\binom32 = 2/3$ on the third: $2/3 + 2/3 = 1.333$.

# %% tags=["nbval-check-output"]
S = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
for name, v in rme.objective_scores(S, lam=0.5).items():
    print(f"{name:6s} {np.round(v.numpy(), 3)}")
print("UWO, unbiased variance:", np.round(rme.objective_scores(S, 0.5, unbiased=True)["UWO"].numpy(), 3))
est = unbiased_best_of_n(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.1, 0.3, 0.2]), [1, 2, 3])
print("best-of-n gold, n = 1, 2, 3:", np.round(est.numpy(), 3))
print("KL_bon(n) for n = 1, 2, 2048:", [round(best_of_n_kl(n), 3) for n in (1, 2, 2048)])

# %% [markdown]
# ## The data
#
# Responses are vectors $y \in \mathbb R^8$ from the "SFT policy" $\mathcal N(0, I)$. The gold reward
# $r^*(y) = w^\top y - 0.15\,\|y\|^2$ with $\|w\| = 1$ prefers moderate responses in the direction $w$; extreme ones are
# bad (the best, $y = w/0.3$, scores $1/0.6 \approx 1.67$; the SFT policy averages $-1.2$). 1,000 pairs from
# $\mathcal N(0, I)$ are labelled by Bradley–Terry on $r^*$ and then 25% of the labels are flipped. Five MLP RMs
# ($8 \to 32 \to 32 \to 1$, ReLU) are trained on the same pairs with different seeds (Bradley–Terry loss, Adam $3\cdot
# 10^{-3}$, batch 128, 300 steps), then standardised over the BoN pool of 20,000 samples. A ReLU network is piecewise
# linear: far out, each member extrapolates along its own directions. That is where they disagree.

# %% tags=["nbval-check-output"]
p = resolve_params(rme.PARAMS, preset, overrides)  # the values the run below will use
data = rme.make_toy(seed, p["n_pairs"], p["dim"], p["pool_size"], p["curvature"])
agree = (data.chosen @ data.w - 0.15 * data.chosen.pow(2).sum(-1)
         > data.rejected @ data.w - 0.15 * data.rejected.pow(2).sum(-1)).float().mean().item()
print(f"{p['n_pairs']} pairs; before flipping, the chosen response has the higher gold reward in {agree:.3f} of them")
print(f"pool of N = {p['pool_size']}: gold mean {data.gold_pool.mean().item():.3f}, "
      f"max {data.gold_pool.max().item():.3f}; best possible 1.667")

# %%
norm = data.pool[:2000].norm(dim=-1)
viz.lines(norm.tolist(), {"r*(y)": data.gold_pool[:2000].tolist()}, mode="markers",
          title="Gold reward of 2,000 SFT samples against ‖y‖", xlabel="‖y‖", ylabel="r*(y)")

# %% [markdown]
# ## Train the RMs and run best-of-n
#
# One call trains the ensemble at the chosen noise rate and, on the same pairs, one without label noise, runs
# best-of-$n$ for $n = 1, 2, 4, \dots, 2048$ against each objective, and sweeps UWO's $\lambda \in \{0.1, 0.5, 1, 2\}$.
# "single" is member 1 alone (the card's "seed 0"); "single (mean of k)" averages the single-RM curves of all $k$
# members. The quick preset uses one data seed; `standard` uses three and adds the PPO part (below).

# %%
result = rme.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **Gold reward against KL.** Every objective starts at the SFT policy ($n = 1$). The conservative objectives end
# higher than the single RM; without label noise (dashed) every curve is higher.

# %%
result.figures["gold_vs_kl"]

# %% [markdown]
# **The proxy keeps rising.** The score that best-of-$n$ optimises (z-scored over the pool) grows with $n$ whatever
# happens to the gold reward; the gap between the two is the over-optimisation, smaller for WCO and UWO.

# %%
result.figures["proxy_vs_kl"]

# %%
result.figures["gap"]

# %% [markdown]
# **Why the ensemble helps.** Each member orders about three quarters of held-out pairs correctly (less in the tails),
# and their disagreement grows with $\|y\|$: the conservative scores penalise exactly the far-out responses.

# %%
result.figures["rm_accuracy"]

# %%
result.figures["disagreement"]

# %%
result.figures["uwo_lambda"]

# %% tags=["nbval-check-output"]
ns = result.extras["ns"]
table = pd.DataFrame({s: np.mean(v, 0) for s, v in result.extras["gold_table"].items()}, index=ns).T
table.columns.name = "n"
print("gold reward of best-of-n (mean over data seeds)")
print(table.round(3).to_string())
print("\nUWO, gold at n =", ns[-1], {lam: round(v[-1], 3) for lam, v in result.extras["lam_sweep"].items()})

# %% [markdown]
# ## PPO on a Gaussian policy (standard preset)
#
# With `preset="standard"` (or `ppo=True`) the run also trains a policy $\mathcal N(\mu, \mathrm{diag}\,\sigma^2)$ from
# $\mathcal N(0, I)$ against each objective with PPO's clipped surrogate (300 iterations of 256 samples, advantage =
# reward minus the batch mean) plus the analytic penalty $\beta_{\rm KL}\,\mathrm{KL}(\pi\,\|\,\mathcal N(0, I))$, for
# $\beta_{\rm KL} \in \{0, 0.01\}$; UWO uses $\lambda = 0.1$ and the unbiased variance, as the paper's PPO config. The gold
# reward $\mathbb E_\pi[r^*] = w^\top\mu - 0.15(\|\mu\|^2 + \sum_j\sigma_j^2)$ and the KL are exact.

# %%
print(inspect.getsource(rme.gaussian_ppo_loss))
for name in ("ppo_gold_vs_kl", "ppo_proxy_vs_kl"):
    if name in result.figures:
        result.figures[name].show()
if "ppo_final" not in result.extras:
    print("PPO is off at this preset: run with preset='standard' or ppo=True.")

# %% [markdown]
# ## The claim check
#
# The card's statements at the last $n$, computed from the run above: (1) the single RM over-optimises, its gold at
# $n_{\max}$ is at least 0.2 below its peak, in every data seed; (2) WCO and UWO each end at least 0.25 above the single
# RM (0.4 on the mean of three data seeds at `standard`). Reported, not asserted: the mean ensemble lies in between,
# the same margin without label noise, and (standard) PPO's final gold of WCO and UWO against the single RM.

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)
print("claims hold:", result.claims_hold)

# %% [markdown]
# **What showed at the quick preset** (data seed 0; read the numbers above). The card's two asserted statements do
# **not** hold here. With 25% label noise the single RM's best-of-$n$ gold reward keeps rising up to $n = 2048$ (it
# flattens, but it does not turn down), so there is no drop to remove, and WCO and UWO end above it by less than the
# 0.25 margin. The direction of the claim does show: WCO > UWO > mean > single at $n = 2048$, the proxy–gold gap
# shrinks from the single RM to WCO, and without label noise the conservative objectives beat the single RM (which
# does turn down a little there) by more than 0.25. Over-optimisation in this toy depends on how one particular RM
# happens to extrapolate: with the three data seeds of `standard`, only one single RM clearly turns down and that is
# where WCO gains most. The seeds were not changed to make the check pass.
#
# What this toy does **not** show: the paper's evidence is on Pythia policies and RMs with a 7B gold RM
# (AlpacaFarm); the tiny-GPT + TRL variant of the card's full preset is not implemented (full runs this same toy
# with more data seeds, pairs and a larger pool).

# %% [markdown]
# ## Try it
#
# Change $\lambda$, the label noise, the ensemble size, the number of pairs and $n_{\max}$, then Train. The plot shows
# the gold reward of best-of-$n$ (x: $n$) per objective as each one finishes.

# %%
widgets.explorer("rm_ensembles", metric="gold_reward")

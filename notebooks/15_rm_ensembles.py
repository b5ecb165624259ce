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

from IPython.display import Markdown

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.methods import rm_ensembles as rme
from labkit.substrates.rlhf import best_of_n_kl, unbiased_best_of_n

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
    print(f"{name:6s} {[fmt(x, 3) for x in v.tolist()]}")
print("uwo, unbiased variance:", [fmt(x, 3) for x in rme.objective_scores(S, 0.5, unbiased=True)["uwo"].tolist()])
est = unbiased_best_of_n(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.1, 0.3, 0.2]), [1, 2, 3])
print("best-of-n gold, n = 1, 2, 3:", [fmt(x, 3) for x in est.tolist()])
print("KL_bon(n) for n = 1, 2, 2048:", [fmt(best_of_n_kl(n), 3) for n in (1, 2, 2048)])

# %% [markdown]
# ## The algorithm: one best-of-n evaluation
#
# `evaluate_best_of_n` is the paper's procedure for one pool: score the SFT policy's samples with every member,
# standardise each member over the pool, combine them per objective, and run the unbiased best-of-$n$ estimator
# with the pool sorted by each combined score. The single-RM baseline is every member on its own, averaged.

# %%
print(inspect.getsource(rme.evaluate_best_of_n))

# %% [markdown]
# ## The data

# %%
p = resolve_params(rme.PARAMS, preset, overrides)  # the values the run below will use
Markdown(
    f"Responses are vectors $y \\in \\mathbb R^{{{p['dim']}}}$ from the \"SFT policy\" $\\mathcal N(0, I)$. The gold "
    f"reward $r^*(y) = w^\\top y - {p['curvature']:g}\\,\\|y\\|^2$ with $\\|w\\| = 1$ prefers moderate responses in "
    f"the direction $w$; extreme ones are bad. {p['n_pairs']:,} pairs from $\\mathcal N(0, I)$ are labelled by "
    f"Bradley–Terry on $r^*$ and then {p['noise']:.0%} of the labels are flipped. {p['n_members']} MLP RMs "
    f"(${p['dim']} \\to {p['rm_hidden']} \\to {p['rm_hidden']} \\to 1$, ReLU) are trained on the same pairs with "
    f"different seeds (Bradley–Terry loss, Adam {p['rm_lr']:g}, batch {rme.experiment.RM_BATCH}, {p['rm_steps']} "
    f"steps), then standardised over the best-of-n pool of {p['pool_size']:,} samples. A ReLU network is piecewise "
    "linear: far out, each member extrapolates along its own directions. That is where they disagree. The look "
    "below is the first data seed."
)

# %% tags=["nbval-check-output"]
p = resolve_params(rme.PARAMS, preset, overrides)  # the values the run below will use
data = rme.make_toy(seed, p["n_pairs"], p["dim"], p["pool_size"], p["curvature"])
c = p["curvature"]
agree = (data.chosen @ data.w - c * data.chosen.pow(2).sum(-1)
         > data.rejected @ data.w - c * data.rejected.pow(2).sum(-1)).float().mean().item()
print(f"{p['n_pairs']} pairs; before flipping, the chosen response has the higher gold reward in {fmt(agree, 3)} of them")
print(f"pool of N = {p['pool_size']}: gold mean {fmt(data.gold_pool.mean().item(), 3)}, "
      f"max {fmt(data.gold_pool.max().item(), 3)}; best possible (y = w/(2c)) {fmt(1 / (4 * c), 3)}")

# %%
norm = data.pool[:2000].norm(dim=-1)
viz.lines(norm.tolist(), {"r*(y)": data.gold_pool[:2000].tolist()}, mode="markers",
          title="Gold reward of 2,000 SFT samples against ‖y‖", xlabel="‖y‖", ylabel="r*(y)")

# %% [markdown]
# ## Train the RMs and run best-of-n

# %%
Markdown(
    f"One call does it for each of {p['n_seeds']} data seeds: it trains the ensemble at {p['noise']:.0%} label noise "
    + ("and, on the same pairs, one without label noise, " if p["compare_noise"] and p["noise"] > 0 else "")
    + f"runs best-of-$n$ for $n = 1, 2, 4, \\dots, {p['max_n']}$ against each objective, and sweeps UWO's $\\lambda \\in "
    f"\\{{{', '.join(f'{lam:g}' for lam in rme.LAM_SWEEP)}\\}}$. \"single\" is member 1 alone; \"single (mean of k)\" "
    f"averages the single-RM curves of all {p['n_members']} members, the paper's single-RM baseline and the one the "
    "claims compare with. The `standard` preset adds the PPO part (below)."
)

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

# %%
ns = result.extras["ns"]
table = pd.DataFrame({s: np.mean(v, 0) for s, v in result.extras["gold_table"].items()}, index=ns).T
table.columns.name = "n"
print("gold reward of best-of-n (mean over data seeds)")
print(table.round(3).to_string())
print("\nUWO, gold at n =", ns[-1], {lam: round(v[-1], 3) for lam, v in result.extras["lam_sweep"].items()})

# %% [markdown]
# ## PPO on a Gaussian policy (standard preset)

# %%
Markdown(
    "With `preset=\"standard\"` (or `ppo=True`) the run also trains a policy $\\mathcal N(\\mu, \\mathrm{diag}\\,"
    "\\sigma^2)$ from $\\mathcal N(0, I)$ against each objective with PPO's clipped surrogate "
    f"({p['ppo_steps']} iterations of {p['ppo_batch']} samples, advantage = reward minus the batch mean) plus the "
    "analytic penalty $\\beta_{\\rm KL}\\,\\mathrm{KL}(\\pi\\,\\|\\,\\mathcal N(0, I))$, for $\\beta_{\\rm KL} \\in "
    f"\\{{{', '.join(f'{b:g}' for b in rme.PPO_BETAS)}\\}}$; UWO uses $\\lambda = {p['ppo_lam']:g}$ and the unbiased "
    "variance, as the paper's PPO config. The gold reward $\\mathbb E_\\pi[r^*] = w^\\top\\mu - "
    f"{p['curvature']:g}(\\|\\mu\\|^2 + \\sum_j\\sigma_j^2)$ and the KL are exact."
)

# %%
print(inspect.getsource(rme.gaussian_ppo_loss))
print(inspect.getsource(rme.train_gaussian_ppo))
for name in ("ppo_gold_vs_kl", "ppo_proxy_vs_kl"):
    if name in result.figures:
        result.figures[name].show()
if "ppo_final" not in result.extras:
    print("PPO is off at this preset: run with preset='standard' or ppo=True.")

# %% [markdown]
# ## The claim check
#
# Each claim is computed once per data seed and judged by a 95% t-interval of its mean against a margin fixed in
# `experiment.py` before the run: **holds** (the interval is on the claimed side), **does not hold** (on the other side)
# or **inconclusive** (it straddles the margin). The headline is the paper's: with label noise, WCO and UWO each end
# best-of-$n$ at $n_{\max}$ with more gold than a single RM (the mean of the $k$ members' own curves); margin 0, the
# paper's "outperform". The supporting checks: the single RM over-optimises (its gold at $n_{\max}$ at least 0.2 below
# its peak, the card's bar); the mean ensemble lies between the single RM and the conservative ones; the same headline
# without label noise; and, with PPO on, PPO's final gold of WCO and UWO above the single RM's for every $\beta_{\rm KL}$.

# %% tags=["nbval-check-output"]
for c in result.claims:  # the verdicts: the same on every CPU kernel and thread count we measured
    print(f"[{c.verdict.label}] ({c.kind}) {c.claim}")

# %% [markdown]
# The numbers behind the verdicts. They are not compared across machines: torch's portable CPU kernels
# (`ATEN_CPU_CAPABILITY=default`) train the RMs a little differently, and best-of-2048 keeps only the top few samples of
# the pool, so the interval edges move by up to 0.03 between kernel sets (`benchmarks/spread/rm_ensembles.json`);
# they are printed at 1 decimal for that reason.

# %%
for c in result.claims:
    print(c)

# %%
head, *rest = result.claims
Markdown(
    f"**What the run above shows** ({result.preset} preset, {len(head.values)} data seeds). The headline — WCO and "
    f"UWO beat a single RM under label noise — is **{head.verdict.value}**: the smaller of the two gains averages "
    f"{fmt(head.interval.mean, 1)} (per seed: {', '.join(fmt(v, 1) for v in head.values)}), 95% interval "
    f"[{fmt(head.interval.low, 1)}, {fmt(head.interval.high, 1)}] against the margin {fmt(head.margin, 1)}. "
    "The supporting checks: " + "; ".join(f"*{c.claim.split(':')[0]}* — **{c.verdict.value}**" for c in rest) + "."
)

# %% [markdown]
# **How to read it** (what we saw at the quick preset with 3 data seeds, 2026-11-30; the verdicts above are the run's
# own). The direction of the paper's claim shows in every data seed: WCO and UWO end above the single RM, and the
# mean ensemble mostly sits between them. But with three seeds and a gain that varies a lot from seed to seed, the
# 95% interval is wide and reaches below 0, so the verdict is inconclusive rather than a pass. The single RM does not
# reliably over-optimise here: averaged over its members, its best-of-$n$ gold flattens and turns down in some data
# seeds and keeps rising in others, so the "drop" that ensembles are meant to remove is small, and the gain at
# $n_{\max}$ comes as much from the ensemble ranking the pool better overall as from avoiding a collapse. Without label
# noise every curve ends higher. Over-optimisation in this toy depends on how the particular RMs happen to
# extrapolate; the seeds were fixed before the run and not changed to make a check pass.
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
import widgets

widgets.explorer("rm_ensembles", metric="gold_reward")

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
# # 08 · RPO — Provably Mitigating Overoptimization in RLHF: Your SFT Loss is Implicitly an Adversarial Regularizer
#
# [arXiv 2405.16436](https://arxiv.org/abs/2405.16436) (NeurIPS 2024) · family: **alignment**
#
# **What you will see:** on a bandit with a known "gold" reward, DPO's gold reward rises for a few dozen steps and then
# collapses as the policy runs off the data; adding an SFT term on the chosen responses (RPO) holds it near its peak.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
eta = None        # RPO weight η on −β·log π(y_w); 0 is DPO
beta = None       # DPO temperature β
n_pairs = None    # preference pairs drawn from π_ref × π_ref
ref_width = None  # coverage width of π_ref ∝ exp(−‖φ‖²/width)

# %%
import inspect

import numpy as np
import torch
from IPython.display import Markdown

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.data import preferences as prefs
from labkit.methods import rpo

overrides = overrides_from(rpo.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# DPO trains a policy $\pi_\theta$ against a frozen reference $\pi_{\rm ref}$ on preference pairs $(y_w \succ y_l)$.
# With $\Delta(y) = \log\pi_\theta(y) - \log\pi_{\rm ref}(y)$ (log-probabilities summed over tokens),
#
# $$\mathcal L_{\rm DPO} = -\,\mathbb E \log\sigma\big(\beta\,\Delta(y_w) - \beta\,\Delta(y_l)\big).$$
#
# DPO only cares about the *difference* between chosen and rejected. Nothing stops it from pushing both down
# and moving the mass to responses that appear in no pair, where the implicit reward
# $\beta \log \pi_\theta/\pi_{\rm ref}$ is pure extrapolation: **over-optimisation**.
#
# The paper picks the policy that is best against the **worst** reward still consistent with the data (low
# Bradley–Terry loss), measured relative to a baseline policy's responses. Re-parameterising the reward by the
# policy (the DPO trick) turns that min–max into one loss, DPO plus an SFT term on the baseline responses,
# which in practice are the chosen ones:
#
# $$\mathcal L_{\rm RPO} = \mathcal L_{\rm DPO} \;-\; \eta\,\beta\;\mathbb E\,\log \pi_\theta(y_w).$$
#
# Here $\log\pi_\theta(y_w)$ is the **sum** over tokens (the official "cumulative SFT" trainer). TRL's
# `rpo_alpha` adds $\alpha\cdot$ the token-**mean** NLL instead (`rpo.rpo_average_loss`); the two agree only up
# to the length normalisation, $\eta\beta = \alpha/|y_w|$.

# %% [markdown]
# ## The losses, and a case you can check by hand
#
# Both functions return one loss per pair (take the mean yourself).

# %%
print(inspect.getsource(rpo.dpo_loss))
print(inspect.getsource(rpo.rpo_loss))

# %% [markdown]
# One pair with $\beta = 0.1$: $\log\pi(y_w) = -1$, $\log\pi(y_l) = -3$, both reference log-probs $-2$.
# Then $\beta\,[\Delta(y_w) - \Delta(y_l)] = 0.1\cdot(1 - (-1)) = 0.2$, so
# $\mathcal L_{\rm DPO} = \log(1 + e^{-0.2}) \approx 0.598$, and with $\eta = 1$ the SFT term adds
# $-1\cdot 0.1\cdot(-1) = +0.1$. Its gradient with respect to $\log\pi(y_w)$ is $-\eta\beta = -0.1$: RPO always
# pulls the chosen response's likelihood up.

# %% tags=["nbval-check-output"]
logp_w = torch.tensor([-1.0], requires_grad=True)
args = (logp_w, torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))
dpo = rpo.dpo_loss(*args, beta=0.1)
rpo_1 = rpo.rpo_loss(*args, beta=0.1, eta=1.0)
(rpo_1 - dpo).sum().backward()
print(f"DPO loss {dpo.item():.3f}  (hand: {np.log1p(np.exp(-0.2)):.3f})")
print(f"RPO loss {rpo_1.item():.3f}  (hand: {np.log1p(np.exp(-0.2)) + 0.1:.3f})")
print(f"d(SFT term)/d log pi(y_w) = {logp_w.grad.item():.3f}  (hand: -eta*beta = -0.100)")

# %% [markdown]
# ## The training loop
#
# The whole algorithm on the toy: one tilted policy per (arm, seed), full-batch Adam on the mean $\mathcal L_{\rm RPO}$
# over the pairs, exact metrics over all $K$ responses at the logged steps.

# %%
print(inspect.getsource(rpo.train_arms))

# %% [markdown]
# Run it on a tiny case: one bandit with 30 responses and 60 pairs, DPO ($\eta = 0$) and RPO ($\eta = 1$), 200 steps.
# Watch DPO's $\log\pi(y_w)$ fall while RPO's holds.

# %%
tiny = prefs.make_gold_bandit(30, 4, seeds=[seed])
tiny_pairs = prefs.sample_bt_pairs(tiny.gold, tiny.ref_logp, 60, seeds=[seed])
tiny_series, _ = rpo.train_arms(tiny, tiny_pairs, torch.tensor([0.1, 0.1]), torch.tensor([0.0, 1.0]), 200, 0.05,
                                [0, 200], prefs.support_mask(tiny.ref_logp))
for a, name in enumerate(["DPO", "RPO eta=1"]):
    print(f"{name:9s} gold {tiny_series['gold_reward'][0, a, 0]:+.2f} -> {tiny_series['gold_reward'][-1, a, 0]:+.2f}, "
          f"mean log pi(y_w) {tiny_series['logp_chosen'][0, a, 0]:.2f} -> {tiny_series['logp_chosen'][-1, a, 0]:.2f}")

# %% [markdown]
# ## The data: a bandit with a gold reward
#
# $K$ responses with features $\varphi(a) = z\cdot u$, $z \sim \mathcal N(0, I_d)$, $u \sim U(0, 2)$ (varied norms).
# The gold reward $r^*(a) = w^{*\top}\varphi(a) - \tfrac12\|\varphi(a)\|^2$ with $w^* \sim \mathcal N(0, I_d)$ rewards a
# direction and punishes far-out responses. The reference (SFT) policy $\pi_{\rm ref}(a) \propto
# \exp(-\|\varphi(a)\|^2/\text{width})$ covers the small-norm responses only. $N$ pairs are drawn from
# $\pi_{\rm ref}\times\pi_{\rm ref}$, the winner by Bradley–Terry on $r^*$, ties (the same response twice) dropped.
#
# The policy is the log-linear tilt $\pi_\theta(a) \propto \pi_{\rm ref}(a)\,e^{\theta^\top\varphi(a)}$, so DPO's implicit
# reward $\beta\,\theta^\top\varphi$ is *linear*: it cannot represent the $-\frac12\|\varphi\|^2$ part, and it extrapolates.
# All expectations are exact sums over the $K$ responses. The **support** of $\pi_{\rm ref}$ is the fewest most
# probable responses that hold the share `support_mass` of its mass (printed below).

# %% tags=["nbval-check-output"]
p = rpo.Knobs(**resolve_params(rpo.PARAMS, preset, overrides))  # the values the run below will use
bandit = prefs.make_gold_bandit(p.n_responses, p.dim, seeds=[seed], ref_width=p.ref_width)
pairs = prefs.sample_bt_pairs(bandit.gold, bandit.ref_logp, p.n_pairs, seeds=[seed])
support = prefs.support_mask(bandit.ref_logp, p.support_mass)
print(f"K = {p.n_responses} responses, d = {p.dim}, {int(pairs.counts[0])} of {p.n_pairs} pairs kept (no ties)")
print(f"support of pi_ref: {int(support.sum())} responses hold {p.support_mass:.0%} of its mass")
print(f"seed {seed}, gold reward: pi_ref {prefs.expectation(bandit.ref_logp, bandit.gold).item():.3f}, "
      f"best response {bandit.gold.max().item():.3f}, worst {bandit.gold.min().item():.3f}")

# %%
norm = bandit.features[0].norm(dim=-1)
fig = viz.lines(norm.tolist(), {"gold reward r*(a)": bandit.gold[0].tolist()}, mode="markers",
                title="Each response: gold reward against ‖φ(a)‖ (marker size ∝ π_ref)", xlabel="‖φ(a)‖",
                ylabel="r*(a)")
fig.update_traces(marker={"size": 4 + 40 * bandit.ref_logp[0].exp().sqrt().numpy()})
fig

# %% [markdown]
# ## Train DPO and RPO

# %%
grid_text = (f"The same call also trains a $\\beta \\times \\eta$ grid ($\\beta \\in \\{{{', '.join(f'{b:g}' for b in rpo.SWEEP_BETAS)}\\}}$, "
             f"$\\eta \\in \\{{{', '.join(f'{e:g}' for e in rpo.SWEEP_ETAS)}\\}}$) and keeps only its final numbers."
             if p.sweep else "")
Markdown(f"Three arms on the same bandits, pairs and labels: DPO ($\\eta = 0$), RPO with $\\eta = {p.eta:g}$ and RPO with "
         f"$\\eta = {p.eta_high:g}$, all with $\\beta = {p.beta:g}$. Full-batch Adam (lr {p.lr:g}), {p.n_steps:,} steps, "
         f"$\\theta = 0$ at the start ($\\pi_\\theta = \\pi_{{\\rm ref}}$), one bandit per seed, {p.n_seeds} seeds. Every "
         "(arm, seed) has its own $\\theta$; they are trained as one tensor because the summed loss separates, so each "
         f"gets exactly its own gradient and Adam update. {grid_text}")

# %%
result = rpo.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **Gold reward.** DPO (step on a log axis) climbs above $\pi_{\rm ref}$ (dotted) for a few dozen steps, then falls
# far below it. RPO climbs less and stays.

# %%
result.figures["gold_reward"]

# %% [markdown]
# **The likelihood of the chosen responses.** DPO only needs $\log\pi(y_w) - \log\pi(y_l)$ to grow; it gets there
# by pushing *both* down. RPO's SFT term holds $\log\pi(y_w)$ where it started.

# %%
result.figures["logp"]

# %% [markdown]
# **Where the mass goes.** The mass DPO takes from the data's responses lands outside $\pi_{\rm ref}$'s support, on
# far-out responses ($\mathbb E\|\varphi\|^2$ grows) that the gold reward punishes.

# %%
result.figures["support_mass"]

# %%
result.figures["sq_norm"]

# %%
result.figures["policy_mass"]

# %% [markdown]
# **Gold reward against KL.** The classic over-optimisation picture: as DPO moves away from $\pi_{\rm ref}$ (KL
# grows) the gold reward first improves and then collapses; RPO stops at a small KL.

# %%
result.figures["kl_vs_gold"]

# %% [markdown]
# **The $\beta\times\eta$ grid.** Final gold reward, mean over seeds, against $\eta$ ($\eta = 0$ is DPO; the x-axis is
# categorical). It shows the trade-off: without the SFT term DPO collapses unless $\beta$ is large enough to slow it;
# a small $\eta$ gains the most; a large $\eta$ is nearly plain SFT on the chosen responses, safe but close to
# $\pi_{\rm ref}$.

# %%
result.figures["tradeoff"]

# %%
grid = result.extras["sweep"].groupby(["beta", "eta"])["gold_reward"].mean().unstack("eta")
print("final gold reward, mean over seeds (rows: beta, columns: eta)")
print(grid.round(3).to_string())

# %% [markdown]
# ## The claim check
#
# Each claim compares one number per seed (each seed is a new bandit, new pairs and labels) with a margin fixed in
# the code before the run, and gives a three-way verdict from the 95% t-interval of the mean over seeds: **holds**
# (the interval is on the claimed side), **does not hold** (on the other side), **inconclusive** (it straddles).
#
# - **Headline** (the paper: RPO beats DPO): the final gold reward of RPO($\eta$) minus DPO's, margin 0.
# - **Supporting** (the paper's Figure 1): DPO lowers the mean $\log\pi(y_w)$ of the chosen responses over
#   training (final − initial ≤ 0), while RPO does not (final − initial ≥ 0).

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)

# %%
m, arms = result.metrics, {o.arm.key: o for o in result.extras["arms"]}
head, drop, hold = result.claims
rpo_ge = sum(r >= d for r, d in zip(arms["rpo"].gold, arms["dpo"].gold))
vs_peak = "above" if m["gold_rpo"] > m["gold_peak_dpo"] else "below"
Markdown(
    f"**What showed at the {result.preset} preset** (read from this run). Headline, RPO beats DPO on final gold reward: "
    f"**{head.verdict.value}** (gap {fmt(head.interval.mean, 2, sign=True)}, 95% interval "
    f"[{fmt(head.interval.low, 2, sign=True)}, {fmt(head.interval.high, 2, sign=True)}] over {head.interval.n} seeds; "
    f"RPO ≥ DPO in {rpo_ge} of {len(arms['rpo'].gold)} seeds). DPO lowers $\\log\\pi(y_w)$: **{drop.verdict.value}**; "
    f"RPO does not lower it: **{hold.verdict.value}**. DPO's gold reward peaks at {fmt(m['gold_peak_dpo'], 2)} "
    f"(π_ref: {fmt(m['gold_reference'], 2)}) and ends at {fmt(m['gold_dpo'], 2)}, with {m['mass_out_dpo']:.1%} of its "
    f"mass outside π_ref's support (RPO: {m['mass_out_rpo']:.1%}). RPO(η={p.eta:g}) ends at {fmt(m['gold_rpo'], 2)}, "
    f"{vs_peak} DPO's *peak*, and RPO(η={p.eta_high:g}) at {fmt(m['gold_rpo_high'], 2)}: a larger η moves RPO towards "
    "plain SFT on the chosen responses, safe but closer to the reference (see the grid for the whole trade-off)."
)

# %% [markdown]
# What this toy does **not** show: the paper's own evidence is on 7B chat models (AlpacaEval 2.0, MT-Bench) and a
# finite-sample bound. Here the over-optimisation comes from a mis-specified (linear) implicit reward that DPO fits
# and then follows far outside the reference's support; the tiny-GPT variant of the card is not implemented.

# %% [markdown]
# ## Try it
#
# Change $\eta$, $\beta$, the number of pairs and the coverage of $\pi_{\rm ref}$, then Train. The plot shows the gold
# reward of each arm and seed while it trains.

# %%
import widgets

widgets.explorer("rpo", metric="gold_reward")

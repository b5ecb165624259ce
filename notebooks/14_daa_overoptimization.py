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

from IPython.display import Markdown

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.methods import daa_overoptimization as daa
from labkit.substrates.preference import ipo_loss

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
    print(f"{kind:4s} loss {fmt(daa.daa_objective(kind, *pair, beta=0.5).item(), 3)}  (hand: {fmt(hand, 3)})")
print(f"paper IPO at beta 0.1: {fmt(daa.daa_objective('ipo', *pair, beta=0.1).item(), 3)} = "
      f"0.1^2 x TRL-convention IPO at beta 0.05: {fmt(0.01 * ipo_loss(*pair, beta=0.05).item(), 3)}")

# %% [markdown]
# And the law on points with known parameters: generate $R(d)$ with $\alpha = 1.2$, $\beta_s = 0.5$ plus a little
# noise, fit, and read the parameters back (the peak should sit near $e^{1.2/0.5 - 1} \approx 4.06$).

# %% tags=["nbval-check-output"]
d = np.linspace(0.1, 3.0, 30)
noisy = daa.scaling_law(d, 1.2, 0.5) + np.random.default_rng(0).normal(0, 0.05, d.size)
fit = daa.fit_scaling_law(d, noisy)
print(f"alpha {fmt(fit.alpha, 3)}, beta_s {fmt(fit.beta_s, 3)}, R^2 {fmt(fit.r2, 3)}, peak d* {fmt(fit.peak_d, 3)}")

# %% [markdown]
# ## The algorithm: one training loop for every run
#
# `train_daa` is the paper's procedure at toy scale: minibatch Adam on $\mathbb E_D[g(\beta h_\theta)]$, with the exact
# KL and gold measured at the checkpoints. It trains every (objective, β, data seed) at once as one tensor; the
# summed loss separates, so each run gets exactly the update it would get alone.

# %%
print(inspect.getsource(daa.train_daa))

# %% [markdown]
# On a tiny case (4 prompts × 6 candidates, 80 pairs, one seed), DPO at β = 0.01 for 4 epochs: the KL starts at 0
# (the policy *is* π_ref at step 0) and grows as the policy moves; the gold reward moves with it.

# %% tags=["nbval-check-output"]
tiny = daa.stack_problems([daa.make_problem(0, 4, 6, 80, 5.0)], "linear", "cpu")
per_epoch = daa.steps_per_epoch(tiny["mask"], 16)
at = daa.checkpoints(4 * per_epoch, per_epoch, per_epoch)  # one checkpoint per epoch
curves, _ = daa.train_daa(tiny, ["dpo"], [0.01], daa.init_head("linear", 1, [0], 2, 8), lr=0.2, epochs=4,
                          batch_size=16, log_steps=at, gens=[torch.Generator().manual_seed(0)])
print(f"{per_epoch} steps per epoch; checkpoints at steps {at}")
print("KL  :", [fmt(v, 3) for v in curves["kl"][:, 0, 0]])
print("gold:", [fmt(v, 3) for v in curves["gold_reward"][:, 0, 0]])

# %% [markdown]
# ## The data: a toy language where length is a trap

# %%
p = resolve_params(daa.PARAMS, preset, overrides)  # the values the run below will use
Markdown(
    f"${p['n_prompts']}$ prompts, each with ${p['n_candidates']}$ candidate responses described by a length "
    "$\\ell \\in \\{1,\\dots,20\\}$ and a content quality $q \\sim \\mathcal N(0,1)$. The reference policy writes short "
    "answers, $\\pi_{\\rm ref}(y|x) \\propto \\exp(-0.6\\,\\ell + 0.3\\,q)$; the hidden gold reward "
    f"$r^*(x,y) = q + 2c\\ell^\\star\\ell - c\\ell^2$ ($c = {daa.GOLD_QUADRATIC:g}$) peaks at $\\ell^\\star = {p['gold_peak']:g}$. "
    f"{p['n_pairs']:,} pairs $y_1, y_2 \\sim \\pi_{{\\rm ref}}$ (ties dropped) per data seed are labelled by Bradley–Terry "
    "on $r^*$: longer is usually better **inside the range the data covers**, and worse far beyond it.\n\n"
    "The policy is $\\pi_\\theta(y|x) \\propto \\pi_{\\rm ref}(y|x)\\,e^{f_\\theta(\\ell/20,\\,q)}$ with "
    f"$f_\\theta$ {p['head']} at this preset, its last layer zero so $\\pi_\\theta = \\pi_{{\\rm ref}}$ at step 0. "
    f"Everything is exact: $\\pi_\\theta$ is a softmax over the {p['n_candidates']} candidates, so KL (under the "
    "**policy**) and gold are sums, with no sampling noise. The look below is the first data seed."
)

# %% tags=["nbval-check-output"]
cands, pairs = daa.make_problem(seed, p["n_prompts"], p["n_candidates"], p["n_pairs"], p["gold_peak"])
ref_probs = cands.ref_logp.exp()
flat_len = cands.length.flatten()
long_pairs = ((flat_len[pairs.chosen] > 8) | (flat_len[pairs.rejected] > 8))[pairs.mask]
print(f"{p['n_prompts']} prompts x {p['n_candidates']} candidates; {int(pairs.mask.sum())} of {p['n_pairs']} "
      "pairs kept")
print(f"pi_ref: mean length {fmt((ref_probs * cands.length).sum(-1).mean().item(), 3)}, "
      f"gold {fmt((ref_probs * cands.gold).sum(-1).mean().item(), 3)}; pairs with a response longer than 8: "
      f"{int(long_pairs.sum())}")

# %%
lengths = np.arange(1, 21)
counts = np.bincount(torch.cat([flat_len[pairs.chosen[pairs.mask]], flat_len[pairs.rejected[pairs.mask]]]).long(),
                     minlength=21)[1:]
fig = viz.lines(lengths, {"responses in the pairs (count / 100)": counts / 100,
                          "gold reward at q = 0": [daa.GOLD_QUADRATIC * (2 * p["gold_peak"] * l - l**2) for l in lengths]},
                mode="lines+markers", title="What the data covers (short) and where gold peaks", xlabel="length ℓ")
fig

# %% [markdown]
# ## Train DPO, IPO and SLiC at several β

# %%
runs = daa.make_runs(p["objective"], daa.parse_betas(p["betas"]))
Markdown(
    f"{len(runs)} runs ({', '.join(dict.fromkeys(r.objective for r in runs))} × β ∈ {{{p['betas']}}}) on each of "
    f"{p['n_seeds']} data seeds, the same pairs and batch order for every run of a seed: Adam (lr {p['lr']:g}), "
    f"batches of {p['batch_size']} pairs, {p['epochs']} epochs; exact KL and gold every {p['log_every']} steps. All "
    f"{len(runs) * p['n_seeds']} are trained as one tensor. The reference policy is the baseline: $R = 0$ by construction."
)

# %%
result = daa.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **The hump.** Every checkpoint of every run and seed, gold gain against $\sqrt{\rm KL}$ (colour = β, marker =
# objective), with the law fitted per objective over all its β and seeds. Small β runs go furthest, past the peak.

# %%
result.figures["law"]

# %% tags=["nbval-check-output"]
for label, f in result.extras["fits"].items():
    print(f"{label:4s} fit (all seeds pooled): alpha {fmt(f.alpha, 3)}, beta_s {fmt(f.beta_s, 3)}, R^2 {fmt(f.r2, 3)}, "
          f"peak at d* {fmt(f.peak_d, 3)} (KL {fmt(f.peak_d ** 2, 3)}), {f.n_points} points")

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
print(f"pi_ref gold {fmt(result.metrics['gold_reference'], 3)} (means over {len(result.extras['seeds'])} seeds)")
for o in result.extras["runs"]:
    peak_epoch = np.mean([h.peak_epoch for h in o.humps])
    peak_sqrt_kl = np.mean([np.sqrt(h.kl_peak) for h in o.humps])
    print(f"{o.spec.arm.label:11s} peak gold {fmt(o.peak_gold, 3)} at epoch {fmt(peak_epoch, 3)} "
          f"(sqrt KL {fmt(peak_sqrt_kl, 3)})  final gold {fmt(o.final_gold, 3)}  final KL {fmt(o.final_kl, 3)}  "
          f"final length {fmt(o.final_length, 3)}")

# %% [markdown]
# ## The claim check
#
# Each claim is computed once per data seed and judged by a 95% t-interval of its mean against a margin fixed in
# `experiment.py` before the run: **holds** (the interval is on the claimed side), **does not hold** (on the other side)
# or **inconclusive** (it straddles the margin). The headline is the paper's: all three DAAs over-optimise — at the
# smallest β each objective ends at least 0.25 below its best checkpoint (the card's bar; the paper gives no number).
# The supporting checks: the KL keeps growing after the peak (so the drop is over-optimisation along the KL axis);
# the law $d(\alpha - \beta_s\log d)$ fitted to DPO's checkpoints per seed has $R^2 \ge 0.6$ and bends down ($\beta_s > 0$);
# the paper's intra-epoch statement — the over-optimising runs (smallest β) peak before the end of epoch 1; and the
# card's looser wording of it — *some* run, of any β, peaks inside epoch 1 and then loses at least 0.05 — with the runs
# that carry it named.

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)

# %%
head, *rest = result.claims
Markdown(
    f"**What the run above shows** ({result.preset} preset, {len(head.values)} data seeds). The headline — all three "
    f"DAAs over-optimise at the smallest β — is **{head.verdict.value}**: the smallest drop over the objectives averages "
    f"{fmt(head.interval.mean, 2)}, 95% interval [{fmt(head.interval.low, 2)}, {fmt(head.interval.high, 2)}] "
    f"against the bar {fmt(head.margin, 2)}. The supporting checks: "
    + "; ".join(f"*{c.claim.split(':')[0]}* — **{c.verdict.value}**" for c in rest)
    + ". Read the intra-epoch pair together: the paper's statement is about the over-optimising runs, and the "
    "looser wording is carried by the runs named in its detail line, whose KL falls again after their peak."
)

# %% [markdown]
# **How to read it** (what we saw at the quick preset, 2026-11-30; the verdicts above are the run's own). At the
# smallest β every objective climbs to about the same peak gold, then loses gold while its KL
# keeps growing and its mean length passes the gold peak. How much it loses varies a lot between data seeds (the
# per-seed values in the headline line): where the drop's interval reaches below the bar the verdict is inconclusive,
# not a pass. The law fits the pooled rise well, but its fitted top $d^\star$ need not sit where the observed peaks
# are (compare `peak_d` with the $\sqrt{\rm KL}$ at the peaks in the table above): most checkpoints lie on the rise,
# and the turn in this toy is sharper than $d(\alpha - \beta_s\log d)$ can bend.
#
# The intra-epoch peak is where the toy and the paper part ways at quick: the small-β humps peak early in the second
# epoch on most seeds, not inside the first. The runs that do peak inside epoch 1 are the large-β ones (β = 1), and there the KL
# *falls* after the peak: the loss pulls the policy back toward π_ref, which is not over-optimisation along the KL axis.
# So the card's "some run peaks in epoch 1" can hold while the paper's statement does not. Quick is also mild (final
# gold stays above π_ref); the standard preset (MLP head, fewer pairs, many more epochs) collapses far below π_ref at
# small β.
#
# Why the toy over-optimises: the pairs almost never contain long responses, and the linear head has no $\ell^2$ term,
# so the implicit reward it learns is "longer is better" everywhere. The card expects a head that *can* bend down
# (add $(\ell/20)^2$) to over-optimise less. The cell below trains that variant on the same data and prints the
# smallest-β drops next to the linear head's (means over seeds).
#
# What this toy does **not** show: GPT-4 win rates, TL;DR summaries and model sizes; the card's tiny-GPT full preset
# is not implemented (full runs this toy with the MLP head and more seeds).

# %% tags=["nbval-check-output"]
quad = daa.run(preset=preset, seed=seed, device=device, progress=False, **{**overrides, "head": "quadratic"})
for label, res in (("linear", result), ("quadratic", quad)):
    low = min(o.spec.beta for o in res.extras["runs"])
    at_low = [o for o in res.extras["runs"] if o.spec.beta == low]
    drops = [f"{o.spec.objective} {fmt(np.mean([h.drop for h in o.humps]), 3)}" for o in at_low]
    kls = [fmt(o.final_kl, 3) for o in at_low]
    print(f"{label:9s} head, beta {low:g}: peak - final gold  {', '.join(drops)};  final KL {', '.join(kls)}")

# %% [markdown]
# **Read it honestly** (measured at the quick preset, 2026-11-30): the quadratic head does *not* over-optimise less;
# its drops are larger.
# Adding a feature is not the same as knowing its sign: over lengths 1–5, where the pairs live, $\ell$ and $\ell^2$ are
# nearly collinear and the gold reward still rises, so the data do not force a negative curvature, and the policy
# can push length even faster. A likely reason, not a proof; the fix the card has in mind needs data (or a prior)
# that reaches the long responses.

# %% [markdown]
# ## Try it
#
# Change the objective, the β list, the learning rate, the number of pairs or the gold peak length, then Train.

# %%
import widgets

widgets.explorer("daa_overoptimization", metric="gold_reward")

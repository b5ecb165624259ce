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
# # 23 · INPO — Iterative Nash Policy Optimization: Aligning LLMs with General Preferences via No-Regret Learning
#
# [arXiv 2407.00617](https://arxiv.org/abs/2407.00617) (ICLR 2025) · family: **alignment**
#
# **What you will see:** on a preference oracle with a rock-paper-scissors cycle (no reward model can represent it),
# iterative DPO ends in an exploitable policy, while INPO's last iterate settles close to the Nash policy.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
eta = None      # OMD step η; the squared loss targets η/2
tau = None      # KL regularisation τ towards π_ref (ητ at most 1)
beta = None     # iterative DPO's temperature β
n_pairs = None  # oracle-labelled pairs per prompt per iteration, drawn from π_t
n_iters = None  # iterations T

# %%
import inspect

import plotly.graph_objects as go
import torch
from IPython.display import Markdown

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.data import preferences as prefs
from labkit.methods import inpo

overrides = overrides_from(inpo.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# DPO and RLHF assume a Bradley–Terry reward: $P(y \succ y') = \sigma(r(y) - r(y'))$. That forces preferences to be
# *transitive*. Real judges (people, or a pairwise preference model) need not be. INPO drops the reward and works
# with a general oracle $P(y \succ y' \mid x)$, with $P(y\succ\pi) = \mathbb E_{y'\sim\pi} P(y \succ y')$.
# The goal is the Nash policy of the symmetric game "whose response is preferred", regularised towards $\pi_{\rm ref}$:
#
# $$\max_\pi \min_{\pi'}\; P(\pi \succ \pi') - \tau\,\mathrm{KL}(\pi\|\pi_{\rm ref}) + \tau\,\mathrm{KL}(\pi'\|\pi_{\rm ref}).$$
#
# The policy plays against itself with online mirror descent (a no-regret learner), step $\eta$:
#
# $$\pi_{t+1}(y) \;\propto\; \pi_t(y)^{1-\eta\tau}\;\pi_{\rm ref}(y)^{\eta\tau}\;\exp\big(\eta\,P(y \succ \pi_t)\big).$$
#
# Thanks to the KL term the *last* iterate converges (to the $\tau$-regularised Nash $\pi^*_\tau$), not only the
# average. Taking the log-ratio of two responses removes the normaliser. With
# $\Delta_\pi = \log\pi(y_w) - \log\pi(y_l)$ (sums of token log-probs),
#
# $$h_t = \Delta_{\pi_\theta} - \eta\tau\,\Delta_{\pi_{\rm ref}} - (1-\eta\tau)\,\Delta_{\pi_t},
# \qquad \hat{\mathcal L}_t(\theta) = \operatorname{mean}_{\text{pairs}} \big(h_t - \tfrac{\eta}{2}\big)^2,$$
#
# over pairs $y, y' \sim \pi_t$ ordered by the oracle's verdict. The win-rate difference
# $\eta\,(P(y\succ\pi_t) - P(y'\succ\pi_t))$ the OMD step needs is never estimated: a Bernoulli label replaces it
# and changes the expected loss only by a constant, so the minimiser of $\hat{\mathcal L}_t$ is (in expectation)
# exactly $\pi_{t+1}$.
#
# **Knobs, paper vs code.** The original code has `ratio` $=\eta\tau$ and `eta` whose target is $1/(2\,\texttt{eta})$,
# so the code's `eta` is $1/\eta$ (defaults `ratio` = 1/3, `eta` = 0.005, i.e. $\eta = 200$).

# %% [markdown]
# ## The loss, and a case you can check by hand

# %%
print(inspect.getsource(inpo.inpo_logits))
print(inspect.getsource(inpo.inpo_loss))

# %% [markdown]
# One pair, $\eta = 2$, $\tau = 0.05$ (so $\eta\tau = 0.1$): $\Delta_{\pi_\theta} = -1 - (-3) = 2$,
# $\Delta_{\rm ref} = -2 - (-1) = -1$, $\Delta_{\pi_t} = -1.5 - (-2) = 0.5$.
# Then $h = 2 - 0.1\cdot(-1) - 0.9\cdot 0.5 = 1.65$ and the loss is $(1.65 - 1)^2 = 0.4225$.
# With $\eta\tau = 1$ INPO is IPO against $\pi_{\rm ref}$ with $\beta = 1/\eta$; with $\tau = 0$ it is IPO against $\pi_t$.

# %% tags=["nbval-check-output"]
args = [torch.tensor([v]) for v in (-1.0, -3.0, -2.0, -1.0, -1.5, -2.0)]
print(f"h    = {inpo.inpo_logits(*args, eta=2.0, tau=0.05).item():.3f}  (hand: 1.650)")
print(f"loss = {inpo.inpo_loss(*args, eta=2.0, tau=0.05).item():.4f} (hand: 0.4225)")
print("original-code knobs ratio=1/3, eta=0.005 -> paper eta = {:.0f}, eta*tau = {:.3f}".format(
    *(lambda e, t: (e, e * t))(*inpo.paper_knobs(1 / 3, 0.005))))

# %% [markdown]
# ## One iteration of the algorithm
#
# The loop of the paper: sample pairs from the current policy $\pi_t$, let the oracle label them, freeze $\pi_t$, and
# fit $\pi_{t+1}$ by minimising $\hat{\mathcal L}_t$ from $\theta_t$. The same call fits the iterative-DPO baseline
# (arm 1) on its own on-policy pairs.

# %%
print(inspect.getsource(inpo.inpo_iteration))
print(inspect.getsource(inpo.fit_iteration))

# %% [markdown]
# Run it once on a tiny case: one prompt, the canonical game, $\pi_0 = \pi_{\rm ref}$, 4,000 pairs, 100 Adam steps,
# and compare the learned $\pi_1$ with the closed-form OMD step (`inpo.omd_step`). The two agree up to sampling noise.

# %%
P1 = prefs.cyclic_preference_matrix()[None, None]  # (S=1, M=1, K, K)
ref1 = torch.log(torch.tensor([0.4 / 3] * 3 + [0.3, 0.3]))[None, None]
theta1, _ = inpo.inpo_iteration(ref1.expand(2, 1, 1, 5).clone(), ref1, P1, [torch.Generator().manual_seed(seed)],
                                n_pairs=4000, eta=2.0, tau=0.05, beta=0.1, n_steps=100, lr=0.1)
print("pi_ref          ", ref1.exp()[0, 0].numpy().round(3))
print("exact OMD step  ", inpo.omd_step(ref1, ref1, P1, 2.0, 0.05).exp()[0, 0].numpy().round(3))
print("learned pi_1    ", torch.softmax(theta1[0, 0, 0], -1).numpy().round(3))

# %% [markdown]
# ## The data: an intransitive preference oracle
#
# The tabular "LLM" of the card: $M$ prompts with $K = 3 + n_{\rm extra}$ responses each, and $\pi_\theta(\cdot\mid x)$
# the softmax of a row of a logit table. Every prompt has the same game with its responses relabelled by a random
# permutation: responses 0–2 form an **asymmetric rock-paper-scissors cycle**, $P(0\succ1) = p_{01}$,
# $P(1\succ2) = p_{12}$, $P(2\succ0) = p_{20}$ (all above ½ at the defaults); the extra responses lose to each of 0–2
# with probability `extra_lose` and tie each other. $\pi_{\rm ref}$ (a weak SFT) puts the share `ref_extra_mass`
# of its mass on the extras. The matrix and the values used by this run are printed below. The Nash policy
# (a small linear program) mixes the cycle with $\pi(0) \propto p_{12} - \tfrac12$, $\pi(1) \propto p_{20} - \tfrac12$,
# $\pi(2) \propto p_{01} - \tfrac12$: each response gets the weight of the edge between the *other* two. No
# Bradley–Terry reward reproduces a cycle (see the fit below).

# %% tags=["nbval-check-output"]
p = resolve_params(inpo.PARAMS, preset, overrides)
P_canon = prefs.cyclic_preference_matrix((p["p01"], p["p12"], p["p20"]), p["n_extra"], p["extra_lose"])
nash = prefs.nash_policy(P_canon)
print(f"M = {p['n_prompts']} prompts, K = {3 + p['n_extra']} responses; pi_ref puts {p['ref_extra_mass']:.0%} on the extras")
print("canonical preference matrix P[i, j] = P(y_i > y_j):")
print(P_canon.numpy().round(3))
print("Nash policy:", nash.numpy().round(3), " exploitability:", fmt(prefs.exploitability(P_canon, nash).item(), 3))

# %% [markdown]
# **The Bradley–Terry fit that DPO implicitly assumes.** Fit rewards $r$ to minimise the cross-entropy between
# $\sigma(r_i - r_j)$ and $P_{ij}$ over all pairs. It must rank the cycle, so it puts one of 0–2 on top (read the
# bars) although another cycle response beats that one most of the time: whatever a reward model ranks first is
# beaten by something, and a policy that chases it is exploitable.

# %%
r = torch.zeros(P_canon.shape[0], requires_grad=True)
opt = torch.optim.Adam([r], lr=0.1)
for _ in range(500):
    fit = torch.sigmoid(r[:, None] - r[None, :])
    loss = -(P_canon * torch.log(fit) + (1 - P_canon) * torch.log(1 - fit)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
labels = [f"y{k}" for k in range(P_canon.shape[0])]
heat = go.Figure(go.Heatmap(z=P_canon.numpy(), x=labels, y=labels, colorscale="RdBu", zmid=0.5,
                            text=P_canon.numpy().round(2), texttemplate="%{text}"))
heat.update_layout(title="P(row ≻ column): the cycle 0 → 1 → 2 → 0", height=380, template="plotly_white")
heat.update_yaxes(autorange="reversed")
heat.show()
viz.bars({k: [v] for k, v in zip(labels, (r - r.mean()).detach().tolist())}, show_points=False,
         title="Best Bradley–Terry fit of the rewards (centred)", ylabel="r(y)")

# %% [markdown]
# ## Train INPO and iterative DPO

# %%
k = inpo.Knobs(**p)
Markdown(
    f"Both start at $\\pi_0 = \\pi_{{\\rm ref}}$. For {k.n_iters} iterations, each draws {k.n_pairs} pairs per prompt "
    f"({k.n_prompts} prompts) from the current $\\pi_t$ (on-policy), asks the oracle for a Bernoulli label, drops pairs "
    f"with $y = y'$, then re-initialises $\\theta \\leftarrow \\theta_t$ and takes {k.n_steps} Adam steps (lr {k.lr:g}) on\n"
    f"- **INPO**: $\\hat{{\\mathcal L}}_t$ with $\\eta = {k.eta:g}$, $\\tau = {k.tau:g}$;\n"
    f"- **iterative DPO**: $-\\log\\sigma(\\beta(\\Delta_{{\\pi_\\theta}} - \\Delta_{{\\pi_t}}))$ with $\\beta = {k.beta:g}$ and "
    "reference $\\pi_t$ (`labkit.substrates.preference.dpo_loss`).\n\n"
    "Alongside, the **exact OMD** path is computed in closed form from $\\pi_0 = \\pi_{\\rm ref}$, and at every iteration "
    "the closed-form step from the *learned* $\\pi_t$ is compared with the learned $\\pi_{t+1}$. Exploitability "
    "$e(\\pi) = \\operatorname{mean}_x[\\max_y P(y\\succ\\pi\\mid x) - \\tfrac12]$ is exact (0 at Nash). "
    f"{k.n_seeds} seeds: each permutes the prompts' responses and draws its own pairs and labels."
)

# %%
result = inpo.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **Exploitability** (log axis). Iterative DPO makes a few big, best-response-like jumps and then **freezes**: within
# a few iterations its policy is (numerically) deterministic on one response per prompt, so every on-policy pair is
# $y = y'$, a tie that is dropped, and learning stops at an exploitable pure policy. INPO follows the exact OMD
# curve down to the floor set by $\tau$: it converges to the *regularised* Nash $\pi^*_\tau$ (dotted), whose
# exploitability is small but not zero.

# %%
result.figures["exploitability"]

# %% [markdown]
# **Win rate against the previous iterate.** DPO's first steps beat the policy they started from by a lot (a
# best-response-like move); once it is deterministic it stays put (0.5). INPO's steps win by less and less, towards
# 0.5: near the Nash policy there is nothing left to gain.

# %%
result.figures["win_vs_prev"]

# %% [markdown]
# **Win rate against iterative DPO's iterate at the same iteration.** Being near Nash does *not* mean beating every
# opponent: an $\varepsilon$-Nash policy is only guaranteed $\ge \tfrac12 - \varepsilon$ against anyone.

# %%
result.figures["win_vs_dpo"]

# %% [markdown]
# **Where the mass goes** (seed 0, prompt 0, responses in the canonical labelling). INPO's masses approach the Nash
# values (dotted); DPO jumps to one corner of the simplex within a few iterations and stays there. On the simplex
# of the cycle responses INPO (like the exact OMD path) curves in towards the star. The card expected DPO to
# cycle *or* to end near-deterministic; with on-policy pairs and these settings it is the latter.

# %%
result.figures["cycle_mass"]

# %%
result.figures["simplex"]

# %%
result.figures["tv_to_nash"]

# %% [markdown]
# **Does the learned iterate follow OMD?** KL from the closed-form OMD step (computed from the learned $\pi_t$) to the
# learned $\pi_{t+1}$: small, and set by the sampling noise of the pairs drawn per prompt.

# %%
result.figures["omd_kl"]

# %% [markdown]
# ## The claim check
#
# Each claim compares one number per seed with a margin fixed in the code before the run, and gives a three-way
# verdict from the 95% t-interval of the mean over seeds: **holds**, **does not hold**, or **inconclusive** (the
# interval straddles the margin).
#
# - **Headline** (the card's toy form of the paper's "INPO beats iterative DPO" on intransitive preferences): the
#   last iterate's exploitability, INPO minus iterative DPO, margin 0.
# - **Supporting**: INPO's last iterate is close to Nash (exploitability ≤ 0.06) and the learned iterate tracks the
#   closed-form OMD step (mean KL ≤ 0.02). Both bounds are the card's teaching-scale tolerances, not the paper's
#   numbers: the paper proves last-iterate convergence to the $\tau$-regularised Nash and that the loss's
#   population minimiser *is* the OMD step.
#
# **Seeds, said plainly:** the quick preset runs 10 seeds (they train as one batch, so 10 cost about what 3 did).
# Before the claims were restated it ran 3; with 3 seeds the same headline read **inconclusive** (interval
# $[-0.199, +0.007]$, measured 2026-11-30 at the quick preset), and the count was raised to 10 *after* that was seen.
# The margin (0) was not moved. Run with `n_seeds=3` to see the 3-seed verdict.
#
# The worst-case win rate $\min_y P(\pi\succ y)$ is not a separate claim: it is $\tfrac12 - e(\pi)$ by construction
# (a unit test). The head-to-head win rate of INPO over iterative DPO is reported below, not claimed: an
# $\varepsilon$-Nash policy is only guaranteed $\ge \tfrac12 - \varepsilon$ against any opponent.

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)

# %%
m, head = result.metrics, result.claims[0]
Markdown(
    f"**What showed at the {result.preset} preset** (read from this run): the headline claim **{head.verdict.value}** "
    f"(e(INPO) − e(iterative DPO) = {fmt(head.interval.mean, 3, sign=True)}, 95% interval "
    f"[{fmt(head.interval.low, 3, sign=True)}, {fmt(head.interval.high, 3, sign=True)}] over {head.interval.n} seeds); "
    f"near-Nash **{result.claims[1].verdict.value}**, OMD tracking **{result.claims[2].verdict.value}**. "
    f"Last-iterate exploitability: INPO {fmt(m['exploitability_inpo'], 3)}, exact OMD {fmt(m['exploitability_exact'], 3)}, "
    f"the τ-regularised Nash {fmt(m['exploitability_reg_nash'], 3)}, iterative DPO {fmt(m['exploitability_dpo'], 3)}: "
    "INPO's residual is about the price of τ > 0, not of learning from samples. Mass off the cycle: INPO "
    f"{fmt(m['mass_off_cycle_inpo'], 3)}, DPO {fmt(m['mass_off_cycle_dpo'], 3)}. Head to head, P(INPO ≻ iterative DPO) = "
    f"{fmt(m['win_inpo_vs_dpo'], 3)}: "
    + ("INPO does **not** beat iterative DPO head to head. DPO mostly freezes on a pure policy, and a near-Nash mix "
       "can lose to a pure policy by a little, which is allowed: an ε-Nash policy only promises ≥ ½ − ε, and "
       "INPO is not trying to exploit anyone."
       if m["win_inpo_vs_dpo"] < 0.5 else "INPO also beats iterative DPO's last iterate head to head.")
)

# %% [markdown]
# What this toy does **not** show: the paper's results are with LLaMA-3-8B, a learned preference model and
# AlpacaEval 2.0 / Arena-Hard (42.6% / 37.8%); the standard and full presets here only enlarge the tabular game
# (more prompts, pairs and iterations); the card's tiny-GPT versions are not implemented. The response
# "tournament" of the original scripts is not used: each pair is two samples from $\pi_t$.

# %% [markdown]
# ## Try it
#
# Change $\eta$ and $\tau$ (with $\tau = 0$ the last iterate keeps orbiting; a large $\tau$ pulls the policy back to
# $\pi_{\rm ref}$), DPO's $\beta$, the number of pairs or iterations, then Train. The plot shows each arm's
# exploitability while it trains.

# %%
import widgets

widgets.explorer("inpo", metric="exploitability")

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
# # 29 · Dual RL — Dual RL: Unification and New Methods for Reinforcement and Imitation Learning
#
# [arXiv 2302.08560](https://arxiv.org/abs/2302.08560) (ICLR 2024) · family: **rl**
#
# **What you will see:** in a slippery gridworld with exact returns, ReCOIL imitating one expert episode with the help
# of purely random data, next to BC and IQ-Learn; and f-DVL's χ²/TV value losses next to XQL's Gumbel loss, which
# overflows when the Q table starts far from consistent while the χ²/TV losses stay bounded.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
beta = None        # ReCOIL mixture weight β (IQ-Learn is its β-to-1 end)
n_replay = None    # uniformly random episodes in D_S (part A)
lam = None         # f-DVL temperature λ of the χ² and TV value losses
alpha = None       # XQL Gumbel temperature α
stress_std = None  # stress test: Q tables initialised N(0, std²)

# %%
import inspect

import numpy as np
import torch
from IPython.display import Markdown

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params, torch_threads
from labkit.methods import dual_rl
from labkit.substrates import gridworld as gw

overrides = overrides_from(dual_rl.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# Reinforcement learning is a linear program over the discounted visitation $d(s,a)$: maximise reward subject to the
# Bellman-flow constraints $\sum_a d(s,a) = (1-\gamma)\rho_0(s) + \gamma \sum_{s',a'} P(s\mid s',a')\,d(s',a')$, here
# regularised towards a data distribution $d^O$ by an $f$-divergence:
#
# $$\max_{d\ge 0}\; \mathbb E_d[r] - \alpha\, D_f(d \,\|\, d^O) \quad \text{s.t. Bellman flow.}$$
#
# Its **Lagrange dual** is an unconstrained problem over value functions (the multipliers of the flow constraints).
# The paper shows that many offline RL and imitation methods (CQL, IQ-Learn, XQL, SMODICE, …) are this dual for some
# $f$ and some constraint set, and that this view exposes two weak points, each with a fix.
#
# **ReCOIL** (imitation). Methods like SMODICE match $d^\pi$ to the expert $d^E$ through the data $d^O$, which only
# works if the data *covers* the expert. ReCOIL matches **mixtures** instead, $\beta d^\pi + (1-\beta) d^S$ against
# $\beta d^E + (1-\beta) d^S$, which always overlap. With multipliers $Q(s,a)$ and $V(s) = $ a (soft) maximum of
# $Q(s,\cdot)$, the dual (χ²: $f^*(y) = y + y^2/4$) is
#
# $$\min_Q\; \beta(1-\gamma)\,V(s_0) \;+\; \beta\,\mathbb E_{d^E}\big[f^*(y)\big] \;+\; (1-\beta)\,\mathbb E_{d^S}\big[f^*(y) - y\big],
# \qquad y(s,a,s') = \gamma V(s') - Q(s,a).$$
#
# On the data, $(1-\beta)(f^*(y) - y) = (1-\beta)y^2/4$ asks for Bellman consistency with **zero reward**; on the expert,
# $f^*(y)$ is smallest at $y=-2$: an implicit reward $Q - \gamma V' > 0$. No discriminator, no coverage assumption.
# With $\beta = 1$ the data term vanishes and this is offline **IQ-Learn** on expert data alone.
#
# **f-DVL** (offline RL). XQL's Gumbel regression is the same dual with $f$ = reverse KL; its value loss is
# exponential in the residual $x = Q(s,a) - V(s)$. f-DVL uses χ² or total variation instead:
#
# $$\mathcal L_V = \mathbb E_{d^O}\big[\lambda\, g_f(x) - (1-\lambda)\,x\big],\qquad
# g_{\chi^2}(x) = \max(x + x^2/4,\, 0),\quad g_{TV}(x) = \max(x, 0),$$
#
# against XQL's $\mathbb E[e^{x/\alpha} - x/\alpha - 1]$ and IQL's expectile $\mathbb E[|\tau - \mathbb 1(x<0)|\,x^2]$.
# All four push $V(s)$ towards a maximum of $Q(s,\cdot)$ over the data's actions; $Q$ regresses to
# $r + \gamma(1-\text{done})V(s')$ and the policy comes from advantage-weighted regression,
# $\max_\pi \mathbb E[\min(e^{\beta_{\rm AWR}(Q-V)}, 100)\log\pi(a\mid s)]$.

# %% [markdown]
# ## The losses, and cases you can check by hand
#
# ReCOIL's dual objective, one value per problem (each argument is batched over problems $K$):

# %%
print(inspect.getsource(dual_rl.chi2_conjugate))
print(inspect.getsource(dual_rl.recoil_loss))

# %% [markdown]
# One problem with $\beta = 0.2$, $\gamma = 0.9$, $V(s_0) = 2$, one expert transition with $y = -2$ and two data
# transitions with $y = \pm 1$: the start term is $0.2\cdot 0.1\cdot 2 = 0.04$, the expert term
# $0.2\, f^*(-2) = 0.2\cdot(-1) = -0.2$ and the data term $0.8\cdot\tfrac12\big(\tfrac14 + \tfrac14\big) = 0.2$, so the
# loss is $0.04$. With $\beta = 1$ it equals minus IQ-Learn's objective with $\phi(x) = -f^*(-x) = x - x^2/4$.

# %% tags=["nbval-check-output"]
T = torch.tensor
hand = dual_rl.recoil_loss(T([[-2.0]]), T([[1.0]]), T([[1.0, -1.0]]), T([[0.5, 0.5]]), T([2.0]), 0.2, 0.9)
print(f"ReCOIL loss {hand.item():.3f}  (hand: 0.04 - 0.2 + 0.2 = 0.040)")
y_e, w_e, v0 = T([[-1.0, 0.5]]), T([[0.5, 0.5]]), T([1.5])
iq_objective = (w_e * (-y_e - y_e**2 / 4)).sum() - (1 - 0.9) * v0
beta_one = dual_rl.recoil_loss(y_e, w_e, y_e[:, :0], w_e[:, :0], v0, 1.0, 0.9)
print(f"beta = 1: ReCOIL loss {beta_one.item():.3f} = -(IQ-Learn objective) = {-iq_objective.item():.3f}")

# %% [markdown]
# The four value losses at $x = 2, -2, -6$ (λ = 0.8, α = 2, τ = 0.8). By hand, χ²:
# $0.8\cdot 3 - 0.2\cdot 2 = 2.0$, then $0.2\cdot 2 = 0.4$, then $0.8\cdot 3 + 1.2 = 3.6$; TV: $1.2, 0.4, 1.2$; Gumbel:
# $e - 2$, $e^{-1}$, $e^{-3} + 2$; expectile: $3.2, 0.8, 7.2$. And the Gumbel loss at $x = 100$ (α = 1) in float32:

# %% tags=["nbval-check-output"]
x = T([2.0, -2.0, -6.0])
for name, loss in [("chi2", dual_rl.chi2_value_loss(x, 0.8)), ("TV", dual_rl.tv_value_loss(x, 0.8)),
                   ("Gumbel", dual_rl.gumbel_value_loss(x, 2.0)), ("expectile", dual_rl.expectile_value_loss(x, 0.8))]:
    print(f"{name:9s}", "  ".join(f"{v:.3f}" for v in loss.tolist()))
print("Gumbel at x = 100, alpha = 1:", dual_rl.gumbel_value_loss(T([100.0]), 1.0).item(),
      "| chi2:", round(dual_rl.chi2_value_loss(T([100.0]), 0.8).item(), 1),
      "| TV:", round(dual_rl.tv_value_loss(T([100.0]), 0.8).item(), 1))

# %% [markdown]
# Their shapes on one axis (log scale): beyond a residual of a few units the Gumbel loss is astronomically larger
# than the others, and so is its gradient. That is the instability.

# %%
p = dual_rl.Knobs(**resolve_params(dual_rl.PARAMS, preset, overrides))  # the values the run below will use
dual_rl.loss_shapes_figure(p.lam, p.alpha, p.expectile)

# %% [markdown]
# ## The training loops
#
# ReCOIL (and IQ-Learn, its $\beta = 1$ case) is full-batch Adam on the dual over Q tables, one table per problem:

# %%
print(inspect.getsource(dual_rl.train_recoil))

# %% [markdown]
# Run it on a tiny case: a deterministic 3×3 grid with one hole, one expert episode and 50 random episodes. The greedy
# policy over the data's actions reaches the goal with certainty; the return is exact (from the known model).

# %%
tiny = gw.GridWorld.from_holes(3, [(1, 1)], slip=0.0, horizon=10, gamma=0.9)
tiny_e = gw.rollouts(tiny, gw.expert_policy(tiny), 1, np.random.default_rng(seed))
tiny_s = gw.rollouts(tiny, gw.uniform_policy(tiny), 50, np.random.default_rng(seed + 1))
tiny_valid = dual_rl.support([(tiny_e, tiny_s)], tiny, "cpu")
with torch_threads(1):  # tiny tensors: one thread is many times faster than two on a small CPU
    tiny_q = dual_rl.train_recoil(torch.zeros(1, 9, 4), dual_rl.to_transitions([tiny_e], "cpu"),
                                  dual_rl.to_transitions([tiny_s], "cpu"), tiny.start, T([0.5]), gamma=0.9, tau=0.05,
                                  valid=tiny_valid, n_steps=300, lr=0.1)
tiny_pi = dual_rl.greedy_in_support(tiny_q, tiny_valid)[0].double().numpy()
print(tiny.render())
print(f"ReCOIL beta=0.5 on the 3x3 grid: return {gw.expected_return(tiny, tiny_pi):.3f} (expert 1.000)")
print("learned V:\n" + tiny.render(dual_rl.soft_value(tiny_q, 0.05, tiny_valid)[0].numpy()))

# %% [markdown]
# f-DVL, XQL and IQL share one loop: a step on $V$ with $Q$ frozen, then a step on $Q$ towards
# $r + \gamma(1-\text{done})V(s')$, each problem with its own value loss. An XQL problem whose value loss overflows is
# stopped and frozen there; the overflow is recorded, not raised.

# %%
print(inspect.getsource(dual_rl.train_dvl))

# %% [markdown]
# ## The data
#
# The card's world: 8×8, start top-left, goal (reward 1) bottom-right, 8 absorbing holes, slip 0.3 (the chosen action
# is replaced by a uniformly random one), horizon 60, γ = 0.95. The known model gives exact returns, normalised as
# D4RL does: 0 is the uniform policy, 1 the value-iteration expert.
#
# - **Part A** (imitation): $D_E$ = one episode of the expert; $D_S$ = uniformly random episodes, which never reach the
#   goal. Neither covers the other.
# - **Part B** (offline RL): episodes of the ε-noisy expert (each step a random action with probability ε), the goal
#   reward ×10.

# %% tags=["nbval-check-output"]
world = dual_rl.make_world(p.grid, seed)
demo = gw.rollouts(world, gw.expert_policy(world), p.n_expert, np.random.default_rng([seed, 1]))
replay = gw.rollouts(world, gw.uniform_policy(world), p.n_replay, np.random.default_rng([seed, 2]))
behaviour = gw.noisy_policy(gw.expert_policy(world), p.noise)
print(world.render())
print(f"seed {seed}: D_E = {demo.n_episodes} expert episode(s), {len(demo)} steps, return {demo.episode_returns().sum():.0f}")
print(f"D_S = {replay.n_episodes} random episodes, {len(replay)} steps, {int(replay.episode_returns().sum())} reach the goal,"
      f" visiting {int((replay.state_action_counts(world.n_states, 4).sum(1) > 0).sum())} of {world.n_states} cells")
print(f"expert success within {world.horizon} steps: {gw.expected_return(world, gw.expert_policy(world)):.3f}; "
      f"part B's behaviour (eps = {p.noise:g}): normalised return "
      f"{gw.normalised_return(world, gw.expected_return(world, behaviour), 1.0):.3f}")

# %% [markdown]
# ## Train everything
#
# Part A trains ReCOIL ($\beta$ and $\beta_{\rm high}$) and IQ-Learn ($\beta = 1$) as one batch of Q tables and
# computes BC by counts. Part B trains IQL, XQL (two α), χ²-DVL and TV-DVL, each twice: from zero tables and from the
# **stress test**'s Q tables drawn $\mathcal N(0, \sigma^2)$. Every arm runs on the same seeds and data.

# %%
Markdown(f"Settings: {p.n_seeds} seeds; part A {p.recoil_steps:,} full-batch Adam steps (lr {p.recoil_lr:g} annealed "
         f"to 0, soft-V τ = {p.tau:g}); part B {p.dvl_steps:,} full-batch Adam steps (lr {p.dvl_lr:g} annealed to 0), "
         f"λ = {p.lam:g}, α ∈ {{{p.alpha:g}, {p.alpha_high:g}}}, IQL τ = {p.expectile:g}, AWR β = {p.awr_beta:g}, "
         f"stress σ = {p.stress_std:g}. The card's prototype used 3,000 steps in both parts and minibatches of 256 at a "
         "constant lr in part B. The quick preset cuts the steps to where the returns had stopped moving; part B takes "
         "full-batch steps, and both parts anneal the lr, because at a constant lr 0.1 the implicit maximisers' V "
         "drifts upwards as training goes on (measured; see experiment.py's docstring).")

# %%
result = dual_rl.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **Part A: imitation.** Normalised return per method (mean over seeds, 95% interval, seeds as dots). BC and
# IQ-Learn only know what to do on the expert's own path; slip pushes the agent off it, where they act at random.

# %%
result.figures["returns_imitation"]

# %% [markdown]
# The data over the grid (log colour scale): the single expert path, and the random data's coverage, which thins out
# towards the goal.

# %%
result.figures["data_heatmap"]

# %% [markdown]
# The learned $V$ over the grid. ReCOIL's data term propagates the expert's implicit reward backwards through the
# random data, so $V$ rises towards the expert's path from everywhere the data reaches; IQ-Learn's $V$ is shaped only
# on the expert's path. f-DVL's $V$ (part B, a real reward) is shown for comparison.

# %%
result.figures["value_heatmap"]

# %% [markdown]
# **Part B: offline RL.** Every implicit maximiser improves far beyond the behaviour policy (dotted).

# %%
result.figures["returns_offline_rl"]

# %% [markdown]
# **The stress test.** The largest value loss over training, per method and seed, from zero tables (blue) and from
# noisy Q tables (red). XQL's exponential loss overflows float32 (× at the dotted line); χ² and TV stay within a few
# orders of magnitude of the zero-start runs.

# %%
result.figures["stress_max_loss"]

# %%
result.figures["stress_trace"]

# %%
result.figures["return_curves"]

# %% [markdown]
# ## The claim check
#
# Each claim compares one number per seed with a margin fixed in the code before the run (the card's), and gives a
# three-way verdict from the 95% t-interval of the mean over seeds.
#
# - **Headline** (the paper: ReCOIL imitates from few expert trajectories plus arbitrary sub-optimal data): ReCOIL
#   beats BC by 0.20 **and** IQ-Learn by 0.15 normalised return; per seed the smaller excess, against 0.
# - f-DVL (χ² and TV) each reach ≥ 0.90 normalised return from ε-noisy data (per seed the smaller of the two).
# - Stress test: XQL's largest value loss reaches ≥ 1e10 (an overflow counts as float32's maximum, 10^38.5), while
#   χ²-DVL's and TV-DVL's stay < 1e4.

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)

# %% [markdown]
# How high can AWR extraction go on this data at all? Give it the **true** optimal $Q^*$ (scaled like the rewards)
# and $V^* = \max_a Q^*$ instead of learned tables, on each seed's part B data:

# %%
ceiling = []
for s in result.extras["seeds"]:
    w = dual_rl.make_world(p.grid, s)
    data_b = gw.rollouts(w, gw.noisy_policy(gw.expert_policy(w), p.noise), p.n_behaviour, np.random.default_rng([s, 3]))
    tb = dual_rl.to_transitions([data_b], "cpu")
    q_star = torch.as_tensor(gw.value_iteration(w).q * p.reward_scale, dtype=torch.float32)[None]
    weights = dual_rl.awr_weights(dual_rl.q_at(q_star, tb.s, tb.a), q_star.amax(-1).gather(1, tb.s), p.awr_beta)
    pi_star = dual_rl.awr_policy(tb.s, tb.a, weights * tb.weight, w.n_states, w.n_actions)[0].double().numpy()
    ceiling.append(gw.normalised_return(w, gw.expected_return(w, pi_star), 1.0))
print("AWR on the true Q*, normalised return per seed:", ", ".join(f"{c:.3f}" for c in ceiling))

# %%
by = {r.arm.key: r for r in result.extras["arms"]}
head, ret, blow, bound = result.claims
m = result.metrics
n_seeds = len(result.extras["seeds"])
gap_bc = np.array(by["recoil"].returns) - np.array(by["bc"].returns)
same = np.allclose(by["iq_learn"].returns, by["bc"].returns)
best_stress = max(np.mean(r.returns) for r in by.values() if r.part == "stress")
reasons = {
    "holds": "the whole interval clears the card's margins",
    "does not hold": "the whole interval is below the card's margins",
    "inconclusive": "the interval straddles the card's margins",
}
Markdown(
    f"**What showed at the {result.preset} preset** (read from this run). Headline: **{head.verdict.value}** — ReCOIL "
    f"(β={p.beta:g}) reaches {fmt(m['return_recoil'], 2)} against BC {fmt(m['return_bc'], 2)} and IQ-Learn "
    f"{fmt(m['return_iq_learn'], 2)}; ReCOIL − BC per seed: {', '.join(fmt(g, 2, sign=True) for g in gap_bc)} "
    f"(ReCOIL ahead on {int((gap_bc > 0).sum())} of {n_seeds} seeds); {reasons[head.verdict.value]}. The card's margin "
    f"of +{dual_rl.experiment.RECOIL_OVER_BC:g} over BC is about the size of the gap this world leaves: BC already gets "
    f"{fmt(m['return_bc'], 2)} from one episode and the expert is 1. "
    + ("IQ-Learn's returns equal BC's on every seed: with expert data only, its Q is informed only on the expert's "
       "states, where its greedy action is the expert's, and it acts at random elsewhere, as BC does. " if same else "")
    + f"f-DVL: **{ret.verdict.value}** — χ² {fmt(m['return_chi2'], 2)}, TV {fmt(m['return_tv'], 2)}, next to IQL "
    f"{fmt(m['return_iql'], 2)} and XQL {fmt(m['return_xql'], 2)} (behaviour {fmt(m['return_behaviour'], 2)}): all "
    f"comparable, and all close to what AWR extraction with β = {p.awr_beta:g} can reach on this data even with the "
    f"true Q* ({fmt(np.mean(ceiling), 2)} on average), so the card's floor of {dual_rl.experiment.DVL_FLOOR:.2f} sits within the "
    "seed noise. "
    f"Stress test: XQL (α={p.alpha:g}) blows up: **{blow.verdict.value}** — its value loss overflowed float32 in "
    f"{by['stress_xql'].overflowed} of {n_seeds} seeds (XQL α={p.alpha_high:g}: largest 10^"
    f"{fmt(m['log10_max_value_loss_stress_xql_high'], 1)}); χ²/TV bounded: **{bound.verdict.value}** — largest "
    f"10^{fmt(m['log10_max_value_loss_stress_chi2'], 1)} (χ²) and 10^{fmt(m['log10_max_value_loss_stress_tv'], 1)} "
    f"(TV). From the stress test's tables the best arm's mean return is {fmt(best_stress, 2)} after "
    f"{p.dvl_steps:,} steps: the check is about the loss, as the card says, not about recovering from the noise."
)

# %%
import pandas as pd

rows = [{"arm": r.arm.label, "part": r.part, **{f"seed {s}": round(v, 3) for s, v in zip(result.extras["seeds"], r.returns)},
         **({"log10 max value loss": ", ".join(fmt(v, 1) for v in dual_rl.log10_loss(r.max_value_loss)),
             "overflow step": ", ".join(str(s) for s in r.overflow_step)} if r.max_value_loss else {})}
        for r in result.extras["arms"]]
print("normalised return per seed (and, in part B, log10 of the largest value loss; overflow step, -1 = none)")
pd.DataFrame(rows).fillna("")

# %% [markdown]
# What this toy does **not** show: the paper's evidence is on D4RL locomotion and manipulation with neural networks,
# where ReCOIL is compared with SMODICE/DemoDICE-style methods that *fail* without coverage (the standard preset's
# SMODICE-lite baseline and the full preset's Hopper runs of the card are not implemented here). In a tabular world
# with a known start, BC from one episode is already strong, and f-DVL's benefit is stability, not return.

# %% [markdown]
# ## Try it
#
# Change β, the amount of random data, λ, α and the stress test's noise, then Train. The plot shows each arm's
# normalised return while it trains.

# %%
import widgets

widgets.explorer("dual_rl", metric="normalised_return")

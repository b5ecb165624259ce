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
# # 24 · Regret-loss — Do LLM Agents Have Regret? A Case Study in Online Learning and Games
#
# [arXiv 2403.16843](https://arxiv.org/abs/2403.16843) (ICLR 2025) · family: **rl**
#
# **What you will see:** a tiny causal transformer trained only to minimise its own (soft-worst) regret on simulated
# loss sequences, with no optimal actions as labels, becomes a no-regret learner: below worst-case-tuned Hedge and far
# below Follow-The-Leader on its training families, and better than the same model trained on best-action labels.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
k = None        # regret-loss sharpness: f is exp(k·R); 0 gives the average regret, large the worst case
horizon = None  # T, rounds per loss sequence
n_steps = None  # Adam steps per trained agent

# %%
import inspect

import numpy as np
import torch
from IPython.display import Markdown

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.data import online_learning as ol
from labkit.methods import regret_loss as rl

overrides = overrides_from(rl.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# **Online learning with full information.** At round $t$ an agent picks a mixed action $\pi_t \in \Delta_d$ from the
# past losses $\ell_1,\dots,\ell_{t-1}$ only; then $\ell_t \in [0,1]^d$ is revealed and it pays $\langle \ell_t,
# \pi_t\rangle$. Its (external) regret is what it paid minus the best fixed action in hindsight,
#
# $$\mathrm{Regret}_T(\pi;\ell) = \sum_{t=1}^T \langle \ell_t, \pi_t\rangle - \min_i \sum_{t=1}^T \ell_{t,i},$$
#
# and a **no-regret** learner has $\mathrm{Regret}_T = o(T)$ on every sequence. Hedge (FTRL with the entropy),
# $\pi_t \propto \exp(-\eta \sum_{s<t}\ell_s)$ with $\eta^* = \sqrt{8\ln d / T}$, guarantees
# $\mathrm{Regret}_T \le \sqrt{T\ln d/2}$; Follow-The-Leader ($\eta\to\infty$) can have linear regret.
#
# The paper finds LLM agents often no-regret but failing on simple sequences, and proposes to *train* a model
# $M_\theta$ to be no-regret with the **regret-loss**, which needs only simulated loss sequences, no labels: draw $N$
# sequences, let $R_j = \mathrm{Regret}_T(M_\theta; \ell^{(j)})$, and minimise a soft maximum of them,
#
# $$\mathcal L(\theta; k, N) = \mathbb E\Big[\sum_j h(R_j)\,\frac{f(R_j,k)}{\sum_{j'} f(R_{j'},k)}\Big],\qquad
#   f(x,k) = e^{kx},\ h(x) = x .$$
#
# As $k\to\infty$ this is the worst of the $N$ regrets, as $k \to 0$ their mean. For one layer of *linear*
# self-attention, the paper shows a minimiser implements FTRL. (No official code was found; $h$, $f$ and the sizes
# follow the card's reconstruction: $h(x) = x$, which keeps a gradient when the regret is negative.)

# %% [markdown]
# ## The rules, and cases you can check by hand

# %%
print(inspect.getsource(rl.cumulative_regret))
print(inspect.getsource(rl.regret_loss))
print(inspect.getsource(rl.hedge))

# %% [markdown]
# Two actions, losses $(1,0), (0,1), (1,0)$ and the plays $(\frac12,\frac12), (1,0), (0,1)$: the agent pays
# $\frac12, 0, 0$; the best action in hindsight has cumulative loss $0$, then $1$, then $1$, so
# $\mathrm{Regret}_t = \frac12, -\frac12, -\frac12$ (negative: it beat every fixed action). The regret-loss of two
# groups $R = (1, 0)$ and $(2, 2)$ with $k = 2$: weights $\mathrm{softmax}(2R)$ give
# $e^2/(e^2+1) \approx 0.881$ in the first group, $2$ in the second, mean $1.440$. FTL on the alternating sequence
# $(\frac12,0),(0,1),(1,0),\dots$ pays 1 at every round after the first.

# %% tags=["nbval-check-output"]
losses = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
plays = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]])
print("Regret_t:", [fmt(v, 3) for v in rl.cumulative_regret(plays, losses)[0].tolist()], "(hand: 0.5, -0.5, -0.5)")
R = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
print(f"regret-loss k=2: {rl.regret_loss(R, k=2.0).item():.3f} (hand: {(np.exp(2) / (np.exp(2) + 1) + 2) / 2:.3f}); "
      f"k=0 (mean): {rl.regret_loss(R, k=0.0).item():.3f}; k=200 (max): {rl.regret_loss(R, k=200.0).item():.3f}")
alt = torch.tensor([[[0.5, 0.0]] + [[0.0, 1.0] if t % 2 else [1.0, 0.0] for t in range(1, 20)]])
print(f"T = 20 alternating: FTL regret {rl.regret(rl.follow_the_leader(alt), alt).item():.2f}, "
      f"Hedge(eta*) {rl.regret(rl.hedge(alt, rl.hedge_eta(20, 2)), alt).item():.2f}, "
      f"bound sqrt(T ln d / 2) = {np.sqrt(20 * np.log(2) / 2):.2f}")

# %% [markdown]
# ## The agent and the training loop
#
# The agent is a causal transformer (pre-norm, no dropout): token $t$ is $\ell_{t-1}$ (a learned start token at
# $t = 1$), and a causal mask lets position $t$ see tokens $\le t$, so $\pi_t$ depends on $\ell_1..\ell_{t-1}$ only.
# One forward pass plays every round of every sequence. Each training step draws $G$ groups of $N$ fresh sequences,
# computes the $G\cdot N$ regrets, and takes an Adam step on the regret-loss (soft max within each group).

# %%
print(inspect.getsource(rl.TransformerAgent.forward))
print(inspect.getsource(rl.train_agent))

# %% [markdown]
# A tiny run of the loop: the single-layer linear self-attention model, 100 steps. Its value block starts at
# zero (uniform play) and drifts towards a negative diagonal, the shape of Hedge's $-\eta I$.

# %%
gen = torch.Generator().manual_seed(seed)
lsa = rl.LinearSelfAttentionAgent(3)
rl.train_agent(lsa, lambda n: ol.sample_mixture(n, 20, 3, gen), objective="regret", n_steps=100, lr=0.02,
               n_groups=8, n_per_group=8, k=2.0)
test = ol.sample_mixture(500, 20, 3, gen)
with torch.no_grad():
    print(f"mean regret on 500 fresh sequences: LSA {rl.regret(lsa(test), test).mean():.2f}, "
          f"Hedge(eta*) {rl.regret(rl.hedge(test, rl.hedge_eta(20, 3)), test).mean():.2f}, uniform "
          f"{rl.regret(torch.full_like(test, 1 / 3), test).mean():.2f}")
    print("value block V[:, :d]:\n", lsa.value[:, :3].numpy().round(2))

# %% [markdown]
# ## The data: three families of loss sequences
#
# *Stochastic* (noisy losses around a per-sequence mean: FTL's home ground), *alternating* (two actions swap 0/1
# every round: the classic FTL killer), *trend* (a linear drift between two random loss vectors). Each training step
# draws a family uniformly per sequence. A fourth, *sinusoidal* family (periodic losses) is **held out**: no model
# trains on it. Every seed evaluates on fresh sequences of each family that training never saw.

# %%
p = rl.Knobs(**resolve_params(rl.PARAMS, preset, overrides))  # the values the run below will use
look = torch.Generator().manual_seed(seed)
figs = {name: ol.sample_family(name, 1, p.horizon, p.n_actions, look)[0] for name in ol.FAMILIES}
viz.lines(list(range(1, p.horizon + 1)), {f"{n}: action 0": s[:, 0].tolist() for n, s in figs.items()},
          mode="lines+markers", title="One sequence per family: the loss of action 0", xlabel="round t",
          ylabel="ℓ_t,0")

# %% [markdown]
# ## Train the agents and play every family

# %%
Markdown(f"Per seed ({p.n_seeds} seeds): the transformer ({p.n_layers} layers, width {p.d_model}, {p.n_heads} heads) "
         f"trained with the regret-loss ($k = {p.k:g}$, $h(x) = x$ here: `{p.h}`, $N = {p.n_per_group}$, "
         f"$G = {p.n_groups}$), {p.n_steps} Adam steps (lr {p.lr:g}) on $d = {p.n_actions}$ actions, $T = {p.horizon}$; "
         "the same transformer trained with the *supervised* loss (cross-entropy to the best action in hindsight, at "
         "every round) on the same stream"
         + (", and the single-layer linear self-attention model" if p.linear_attention else "")
         + f". Then every agent, Hedge and FTPL at $\\eta^* = {rl.hedge_eta(p.horizon, p.n_actions):.3f}$, FTL and "
         f"uniform play the same {p.n_eval} fresh sequences per family.")

# %%
result = rl.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **Regret over the rounds.** One panel per family (mean over sequences, band over seeds). FTL's regret grows
# linearly on alternating losses; the regret-loss transformer stays low everywhere it trained, and on alternating
# losses goes *negative*: it learns the pattern and beats every fixed action.

# %%
result.figures["regret_stochastic"]

# %%
result.figures["regret_alternating"]

# %%
result.figures["regret_trend"]

# %% [markdown]
# **The held-out family.** Beating worst-case Hedge is a statement about the *training distribution*; on periodic
# losses it never saw, the trained model can do worse than Hedge.

# %%
result.figures["regret_sinusoidal"]

# %% [markdown]
# **Action probabilities on one alternating sequence** (first seed): FTL flip-flops onto the action about to lose;
# Hedge stays near ½; the trained model follows the alternation.

# %%
result.figures["alternating_policy"]

# %%
result.figures["training"]

# %% [markdown]
# **Self-play.** Two copies of the trained transformer repeat biased rock-paper-scissors (paper beating rock pays
# double, Nash $(\frac14,\frac14,\frac12)$), each seeing the expected loss vector of the other's mixed strategy. If both
# are no-regret, their time-averaged strategies approach the Nash equilibrium (constant-sum game).

# %%
if "self_play" in result.figures:
    display(result.figures["self_play"])  # noqa: F821 (IPython)

# %%
if "lsa_value" in result.figures:
    display(result.figures["lsa_value"])  # noqa: F821 (IPython)

# %%
names = {a.key: a.label for a in result.extras["arms"]}
print(f"mean Regret_T per family (T = {p.horizon}), mean over seeds")
print(f"{'':32s}" + "".join(f"{f:>13s}" for f in result.extras["families"]))
for key, reg in result.extras["regrets"].items():
    print(f"{names[key]:32s}" + "".join(f"{np.mean(reg.final[f]):13.2f}" for f in result.extras["families"]))

# %% [markdown]
# ## The claim check
#
# Margins are fixed in the code before the run, from the card's claim check (the paper gives no toy numbers); each
# value is one seed (a new model, training stream and evaluation set); the verdict comes from the 95% t-interval over
# seeds. The headline is the paper's claim in toy form: trained with the regret-loss alone, the transformer's
# worst-family regret is at most 0.75× that of worst-case-tuned Hedge. Supporting: ≤ 0.25× FTL's; on stochastic
# losses no more than 0.3 worse than FTL; sub-linear growth (worst-family $\mathrm{Regret}_t/t$ falls from $t = T/2$
# to $t = T$); and lower regret than the supervised loss. The checked cell prints the verdicts of the headline and
# the FTL comparison, whose intervals sit far from their margins; the other verdicts sit close enough to theirs that
# they can differ between CPU kernels (measured when the quick preset trained 300 steps: the stochastic check moved
# from holds to inconclusive under `ATEN_CPU_CAPABILITY=default`; at 200 steps its interval ends at +0.32 with
# AVX-512 kernels and +0.33 with the default ones, against 0.3, and the sub-linear one at −0.009 and −0.031,
# against 0), so they are printed, with all the numbers, in the cell after it.

# %% tags=["nbval-check-output"]
for c in result.claims[:2]:
    print(f"[{c.verdict.label}] ({c.kind}) {c.claim}")

# %%
for c in result.claims:
    print(c)

# %%
m, reg = result.metrics, result.extras["regrets"]
head = result.claims[0]
worst_family = max(ol.TRAIN_FAMILIES, key=lambda f: np.mean(reg["regret"].final[f]))
sp = result.extras.get("self_play")
sp_text = (f"In self-play the time-averaged strategies end at L1 distance {fmt(m['nash_distance_model'], 2)} from Nash "
           f"after {p.horizon} rounds (Hedge vs Hedge: {fmt(m['nash_distance_hedge'], 2)}); at this horizon neither is "
           "close, so this is a direction, not convergence." if sp else "")
short = ["≤ 0.25× FTL", "stochastic: ≤ FTL + 0.3", "sub-linear growth", "below the supervised loss"]
verdicts = ", ".join(f"{name}: **{c.verdict.value}**" for name, c in zip(short, result.claims[1:]))
sto = result.claims[2]
# the regret-loss arm's mean training regret (the mixture of families) along training, mean over seeds
train = result.history.query("metric == 'train_regret'").groupby(["series", "step"])["value"].mean()[names["regret"]]
marks = [int(train.index[train.index <= p.n_steps * q].max()) for q in (0.5, 0.75, 1.0)]
falling = bool(np.all(np.diff(train[marks].to_numpy()) < 0))
sto_text = (f" The stochastic check is **{sto.verdict.value}**: the transformer is "
            f"{fmt(sto.interval.mean, 2, sign=True)} above FTL there (95% interval "
            f"[{fmt(sto.interval.low, 2, sign=True)}, {fmt(sto.interval.high, 2, sign=True)}], margin +0.3). This run "
            f"trained {p.n_steps} steps, and its mean training regret (all families) was "
            f"{'still falling' if falling else 'no longer falling steadily'} at the end: "
            + ", ".join(f"{fmt(train[s], 2)} at step {s}" for s in marks) + "." if not sto.holds else "")
if not sto.holds and result.preset == "quick":
    quick_steps = resolve_params(rl.PARAMS, "quick", {})["n_steps"]
    sto_text += (f" The quick preset's {quick_steps} steps were cut from 300 to fit the notebook "
                 "budget of about 20 s; with 300 steps this check held (+0.18, interval [+0.11, +0.26], the transformer "
                 "at 0.79 against FTL's 0.60).")
Markdown(
    f"**What showed at the {result.preset} preset** (read from this run). Headline: **{head.verdict.value}**: the "
    f"regret-loss transformer's worst training-family regret is {fmt(head.interval.mean, 2)}× Hedge's (95% interval "
    f"[{fmt(head.interval.low, 2)}, {fmt(head.interval.high, 2)}] over {head.interval.n} seeds; margin 0.75): "
    f"{fmt(m['worst_regret_regret'], 2)} vs {fmt(m['worst_regret_hedge'], 2)}, its worst family being {worst_family}. "
    f"FTL reaches {fmt(m['regret_ftl_alternating'], 2)} on alternating losses, where the transformer has "
    f"{fmt(m['regret_regret_alternating'], 2)}. The supervised model's worst-family regret is "
    f"{fmt(m.get('worst_regret_supervised', float('nan')), 2)}. Supporting: {verdicts}.{sto_text} On the held-out "
    f"sinusoidal family the transformer has {fmt(m['regret_regret_sinusoidal'], 2)} against Hedge's "
    f"{fmt(m['regret_hedge_sinusoidal'], 2)}: the no-regret behaviour is learnt for the training distribution, not "
    f"guaranteed beyond it. {sp_text}"
)

# %% [markdown]
# **Sub-linear growth, per seed.** The regret-loss trains on Regret_T at the one horizon $T$ only, so nothing forces
# $\mathrm{Regret}_t/t$ to fall *within* a sequence; the numbers below show, per seed, the worst training-family
# $\mathrm{Regret}_t/t$ at $t = T/2$ and $t = T$ for the model and for Hedge($\eta^*$) (whose bound gives
# $\mathrm{Regret}_t/t \propto 1/\sqrt t$).

# %%
half, full = p.horizon // 2 - 1, p.horizon - 1
for key in ("regret", "hedge"):
    r = result.extras["regrets"][key].per_round
    print(f"{names[key]:28s} t={half + 1}: {np.round(r[:, half], 3)}   t={full + 1}: {np.round(r[:, full], 3)}")
sub = result.claims[3]
falls = int((np.asarray(sub.values) < 0).sum())
Markdown(f"The sub-linear-growth check is **{sub.verdict.value}** here: the worst-family $\\mathrm{{Regret}}_t/t$ "
         f"changes by {fmt(sub.interval.mean, 3, sign=True)} from $t = {p.horizon // 2}$ to $t = {p.horizon}$ (95% "
         f"interval [{fmt(sub.interval.low, 3, sign=True)}, {fmt(sub.interval.high, 3, sign=True)}]). It falls in "
         f"{falls} of {sub.interval.n} seeds; with {sub.interval.n} seeds the t-interval is wide (its quantile is "
         "4.3), so where the seeds disagree in size the verdict stays open: more seeds (`n_seeds`) or the standard "
         "preset's longer horizon settle it, not a moved margin."
         + (" (With the quick preset's former 300 steps it was inconclusive: −0.062, interval [−0.151, +0.028].)"
            if result.preset == "quick" else ""))

# %% [markdown]
# What this toy does **not** show: the paper's LLM experiments (GPT-4 and others prompted as agents), its
# generalisation bound, and the proof that a single linear self-attention layer recovers FTRL (the standard preset
# trains that model and shows its value matrix next to Hedge's $-\eta^* I$; the full preset's adaptive adversaries
# are not implemented). Regret growth is read from prefixes $\mathrm{Regret}_t$ of one horizon rather than from models
# trained at several $T$.

# %% [markdown]
# ## Try it
#
# Change $k$, the horizon and the number of steps, then Train; the plot shows the mean training regret of each agent.

# %%
import widgets

widgets.explorer("regret_loss", metric="train_regret")

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
# # 18 · LOL — Lower Layer Matters: Alleviating Hallucination via Multi-Layer Fusion Contrastive Decoding with Truthfulness Refocused
#
# [arXiv 2408.08769](https://arxiv.org/abs/2408.08769) (Chen et al., 2024) · no official code ("released upon
# acceptance") · family: **alignment**
#
# **What you will see:** a tiny GPT trained on a fact world where popular misconceptions outnumber the truth about rare
# entities. Greedy decoding repeats the misconceptions; contrasting the model with a copy fine-tuned on false statements
# (ICD), fusing a lower layer's contrast and prepending a truthfulness tag (LOL) recover the truth — and the ablations
# show which of LOL's parts does the work here.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
alpha = None          # contrast strength α of ICD and LOL (used as given when tune is off)
omega = None          # LOL's fusion weight ω of the lower-layer contrast
layer = None          # LOL's lower layer ℓ (1 … n_layers − 1)
beta_apc = None       # plausibility constraint: keep tokens with q ≥ β_apc · max q
tune = None           # choose α, ω, ℓ on the validation entities
amateur_steps = None  # fine-tuning steps that induce hallucinations in the amateur

# %%
import inspect

import numpy as np
import torch
from IPython.display import Markdown

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.data import facts
from labkit.methods import lol_decoding as lol

overrides = overrides_from(lol.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# **Contrastive decoding** scores each next token $v$ by how much more an *expert* likes it than an *amateur*:
# tokens that both like (generic, or hallucinated) lose ground. **ICD** builds the amateur on purpose: it fine-tunes
# the model itself on false statements, so the amateur is the model's *hallucinating* twin and the subtraction targets
# hallucinations:
#
# $$s_{\rm ICD}(v) = (1+\alpha)\log q_M^{(L)}(v) - \alpha \log q_A^{(L)}(v)\quad\text{on } V_{\rm head}.$$
#
# $q^{(j)} = \mathrm{softmax}(\mathrm{head}(\mathrm{LN}_f(h^{(j)})))$ is the *early-exit* distribution after block
# $j$ (DoLa's trick: send a lower layer's state through the final norm and the LM head). The **adaptive plausibility
# constraint** keeps the contrast from promoting junk both models find unlikely:
# $V_{\rm head} = \{v : q_M^{(L)}(v) \ge \beta_{\rm apc}\max_w q_M^{(L)}(w)\}$.
#
# **LOL** argues that contrasting only the final layer is coarse, and adds the same contrast at a *lower* layer
# $\ell$, fused with weight $\omega$:
#
# $$F(v) = \underbrace{(1+\alpha)\log \tilde q_M^{(L)}(v) - \alpha\log q_A^{(L)}(v)}_{F_L}
# \;+\;\omega\,\underbrace{\big[(1+\alpha)\log \tilde q_M^{(\ell)}(v) - \alpha\log q_A^{(\ell)}(v)\big]}_{F_\ell},
# \qquad y = \arg\max_{v\in V_{\rm head}} F(v).$$
#
# The tilde is **truthfulness refocusing**: the model side reads the input with a truthfulness instruction put in
# front; the amateur reads the plain input. The abstract fixes this structure; the exact weights, the layer and the
# instruction are not public, so α, ω, ℓ here are knobs chosen on held-out entities (a reconstruction).
#
# Baselines: greedy decoding; **CD** (Li et al.: $\log q_M - \log q_S$ with a *smaller* model $S$ trained on the same
# data); **DoLa** ($\log q_M^{(L)} - \log q_M^{(m)}$, the premature layer $m$ with the largest Jensen–Shannon
# divergence from the final layer, chosen per token); **ICD**.

# %% [markdown]
# ## The rules, on a case you can check by hand
#
# Four tokens. The model's final layer says $q_M = (0.5, 0.3, 0.04, 0.16)$, the induced amateur $q_A = (0.7, 0.1, 0.1,
# 0.1)$: the model's favourite (token 0) is the amateur's favourite too — a hallucination they share.
#
# - APC with $\beta_{\rm apc} = 0.1$: the bar is $0.1\cdot 0.5 = 0.05$, so token 2 (0.04) is out.
# - ICD with $\alpha = 1$: $2\log 0.3 - \log 0.1 = -0.105$ for token 1 beats $2\log 0.5 - \log 0.7 = -1.030$ for token 0.
# - LOL adds $\omega\,F_\ell$; with a lower layer that prefers token 3 ($q^{(\ell)}_M = (0.1, 0.1, 0.1, 0.7)$, a uniform
#   amateur) and $\omega = 1$, token 3 wins: $F(3) = (2\log 0.16 - \log 0.1) + (2\log 0.7 - \log 0.25) = -0.690$.

# %%
print(inspect.getsource(lol.plausible_head))
print(inspect.getsource(lol.contrast))
print(inspect.getsource(lol.lol_scores))

# %% tags=["nbval-check-output"]
def row(*p):
    return torch.log(torch.tensor([p], dtype=torch.float64))


q_m, q_a = row(0.5, 0.3, 0.04, 0.16), row(0.7, 0.1, 0.1, 0.1)
lower_m, lower_a = row(0.1, 0.1, 0.1, 0.7), row(0.25, 0.25, 0.25, 0.25)
print("V_head (beta_apc = 0.1):", lol.plausible_head(q_m, 0.1)[0].tolist())
icd_case = lol.icd_scores(q_m, q_a, alpha=1.0, beta_apc=0.1)[0]
print("ICD scores:", [fmt(s, 3) for s in icd_case.tolist()], "-> token", int(icd_case.argmax()), "(greedy: token 0)")
for w in (0.0, 1.0):
    fused = lol.lol_scores(q_m, lower_m, q_a, lower_a, alpha=1.0, omega=w, beta_apc=0.1)[0]
    print(f"LOL omega={w:g}:", [fmt(s, 3) for s in fused.tolist()], "-> token", int(fused.argmax()))

# %% [markdown]
# A masked token scores $-1000$ (the official CD/DoLa/ICD codes' `relative_top_value`) rather than $-\infty$, so that a
# multiple-choice question whose answers all fall outside $V_{\rm head}$ is a tie, not a NaN.
#
# ## The algorithm: one LOL decoding step, and greedy generation
#
# Early exit runs the blocks one by one and reads the LM head after each; the step runs the refocused model and the
# plain amateur at the final and the lower layer and fuses; generation feeds each chosen token back to both.

# %%
print(inspect.getsource(lol.early_exit_logprobs))
print(inspect.getsource(lol.lol_step))
print(inspect.getsource(lol.lol_generate))

# %% [markdown]
# The amateur comes from ICD's *induce* step: a copy of the model fine-tuned on false statements only.

# %%
print(inspect.getsource(lol.induce_amateur))

# %% [markdown]
# ## The data: a fact world with popular misconceptions
#
# Entities $e$ and value tokens $v$. Each entity has a true value $t(e)$, a misconception $m(e)$ drawn from a few
# *popular* values, and a frequency $n(e)$ (Zipf): the corpus states "[BOS] e is t(e)" $n(e)$ times — half of these
# copies tagged "[BOS] [FACT] e is t(e)" — and the false "[BOS] e is m(e)" twice for every entity, never tagged. So a
# **rare** entity ($n(e) \le 2$) is seen with its misconception at least as often as with its truth. The refocusing
# instruction is the "[FACT]" tag; evaluation asks "[BOS] e is" with five candidates: $t(e)$, $m(e)$ and three random
# values (MC1: is the truth scored strictly highest? MC2: the normalised probability on the truth).

# %% tags=["nbval-check-output"]
p = lol.Knobs(**resolve_params(lol.PARAMS, preset, overrides))  # the values the run below will use
world = facts.make_fact_world(p.n_entities, p.n_values, p.n_popular, p.zipf_s, p.max_count, seed=seed)
corpus = facts.fact_corpus(world, p.false_repeats, p.fact_frac, seed=seed)
val_e, test_e = facts.split_entities(world.n_entities, p.val_frac, seed=seed)
print(f"{world.n_entities} entities, {p.n_values} values ({p.n_popular} popular), {len(corpus)} sentences: "
      f"{int(corpus.true.sum())} true ({int(corpus.tagged.sum())} tagged [FACT]), {int((~corpus.true).sum())} false")
print(f"rare entities (n(e) <= {facts.RARE_MAX}): {int(world.rare.sum())}; validation / test entities: "
      f"{len(val_e)} / {len(test_e)} (rare: {int(world.rare[val_e].sum())} / {int(world.rare[test_e].sum())})")
for i in (0, int(corpus.true.sum()) - 1, len(corpus) - 1):
    words = [world.vocab.name(t) for t in corpus.tokens[i].tolist() if t != world.vocab.PAD]
    print(" ", " ".join(words), "  (true)" if bool(corpus.true[i]) else "  (false)")

# %%
counts = torch.bincount(world.count, minlength=p.max_count + 1)[1:]
viz.bars({str(n): [int(c)] for n, c in enumerate(counts.tolist(), start=1) if c},
         title=f"How often the truth is stated, n(e), seed {seed} (rare: n(e) ≤ {facts.RARE_MAX})",
         ylabel="entities", show_points=False)

# %% [markdown]
# ## Train the models and score every decoder
#
# Per seed: the original model $M$ (TinyLM), CD's small amateur $S$ (fewer blocks, same corpus), the induced amateur
# $A$ ($M$ fine-tuned on the false statements), then every decoder's MC1/MC2 on the test entities. With `tune` on,
# α (ICD, LOL), ω and ℓ (LOL) are chosen by MC1 on the rare **validation** entities, each ablation on its own; ties
# go to the first in grid order, so ω = 0 wins unless the lower layer actually helps on validation.

# %%
grid = (f"α ∈ {{{', '.join(f'{a:g}' for a in lol.ALPHAS)}}}, ω ∈ {{{', '.join(f'{w:g}' for w in lol.OMEGAS)}}}, "
        f"ℓ ∈ {{1, …, {p.n_layers - 1}}}")
Markdown(f"{p.n_seeds} seeds, each a new world, corpus, split and set of models. $M$: {p.n_layers} blocks, width "
         f"{p.d_model}, {p.steps} AdamW steps of {p.batch_size} sentences (lr {p.lr:g}); $S$: {p.small_layers} block(s), "
         f"the same steps; $A$: {p.amateur_steps} steps on the false statements (lr {p.amateur_lr:g}). β_apc = "
         f"{p.beta_apc:g}. " + (f"Tuned on validation from {grid}." if p.tune else
                                f"Not tuned: α = {p.alpha:g}, ω = {p.omega:g}, ℓ = {p.layer}."))

# %%
result = lol.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary().split("\n")[0])
for c in result.extras["choices"]:
    print(f"seed {c.seed}: ICD alpha={c.icd.alpha:g} | LOL alpha={c.lol.alpha:g} omega={c.lol.omega:g} "
          f"layer={c.lol.layer} | amateur MC1 (all test) {c.amateur_mc1_all:.2f} vs original {c.model_mc1_all:.2f} | "
          f"DoLa premature layer shares {[round(s, 2) for s in c.dola_layers]}")

# %%
for o in result.extras["arms"]:
    print(f"{o.arm.label:22s} MC1 rare {np.mean(o.mc1_rare):.3f}  all {np.mean(o.mc1_all):.3f} | "
          f"MC2 rare {np.mean(o.mc2_rare):.3f} | generation rare {np.mean(o.gen_rare):.3f}")

# %% [markdown]
# ## What happened
#
# **MC1 per decoder.** Red: the rare test entities, where the misconception dominates; blue: all test entities.
# Error bars: the 95% t-interval of the mean over seeds.

# %%
result.figures["mc1"]

# %% [markdown]
# **One rare entity, up close.** Green is the truth, red the misconception. The original model prefers the
# misconception; the induced amateur prefers it even more; the contrasts push it down. The last three panels are the
# decoding distributions $\mathrm{softmax}$ of each score on $V_{\rm head}$.

# %%
result.figures["distributions"]

# %% [markdown]
# **Accuracy against frequency.** How often the truth was stated decides what greedy decoding says; the contrasts
# matter most where it was stated once or twice.

# %%
result.figures["frequency"]

# %% [markdown]
# **Where does the truth appear?** Early-exit MC1 per layer (0 = embeddings) of the original model (plain and
# refocused) and of the amateur: the input of LOL's lower-layer contrast and of DoLa.

# %%
result.figures["layers"]

# %% [markdown]
# **Sensitivity.** One knob moves while the others stay where validation put them; validation dotted, test solid.
# The test curves are shown, never used to choose.

# %%
result.figures["sensitivity"]

# %%
result.figures["nll"]

# %% [markdown]
# ## The LOL loop on the trained models
#
# `lol_generate` on a few rare test entities of the first seed, with the knobs validation chose there, next to greedy
# decoding of the same model.

# %%
sm, choice = result.extras["models"], result.extras["choices"][0]
rare_test = sm.test.entities[sm.test.rare][:6].cpu()
x = facts.prompts(sm.world, rare_test).to(sm.model.head.weight.device)
instruction = torch.tensor(lol.INSTRUCTION)
knobs = {"layer": choice.lol.layer, "alpha": choice.lol.alpha, "omega": choice.lol.omega, "beta_apc": choice.lol.beta_apc}
lol_out = lol.lol_generate(sm.model, sm.amateur, x, 1, instruction, **knobs)[:, 0].tolist()
with torch.no_grad():
    greedy_out = sm.model(x)[:, -1].argmax(-1).tolist()
name = sm.world.vocab.name
for e, g, y in zip(rare_test.tolist(), greedy_out, lol_out):
    t, m = sm.world.vocab.value(int(sm.world.true_value[e])), sm.world.vocab.value(int(sm.world.misconception[e]))
    print(f"e{e} is ...  truth {name(t):4s} misconception {name(m):4s} | greedy {name(g):4s} | LOL {name(y):4s}")

# %% [markdown]
# ## The claim check
#
# Each claim compares one number per seed with a margin fixed in the code before the run, and gives a three-way
# verdict from the 95% t-interval of the mean over seeds: **holds**, **does not hold**, or **inconclusive**.
#
# - **Headline** (the paper: LOL "mitigates hallucination while outperforming existing baselines"): on the rare test
#   entities, MC1 of LOL minus the better of greedy decoding and CD, margin 0.
# - **Supporting** (the card's targets): LOL ≥ greedy + 0.15; ICD ≥ greedy + 0.10; LOL ≥ ICD − 0.02 (non-inferiority
#   of LOL's additions; the gains over DoLa, over LOL without the lower layer, of the lower layer without refocusing
#   and over refocusing alone are printed, not asserted: the card asserts them only at the standard preset).

# %% tags=["nbval-check-output"]
for c in result.claims:  # the verdicts: far from their margins, identical on any CPU
    print(f"[{c.verdict.label}] ({c.kind}) {c.claim}")

# %% [markdown]
# The numbers behind them (MC1 moves by one entity, ≈ 0.01, between CPU kernels, so they are printed unchecked):

# %%
for c in result.claims:
    print(c)

# %%
m, head, choices = result.metrics, result.claims[0], result.extras["choices"]
sens = result.extras["sensitivity"]


def at(frame, knob, arm, value):
    rows = frame[(frame["knob"] == knob) & (frame["arm"] == arm) & (frame["split"] == "test")]
    return float(rows[np.isclose(rows["value"], value)]["mc1_rare"].mean())


def vs(a, b, tol=0.03):
    return "about the same as" if abs(a - b) < tol else ("above" if a > b else "below")


no_apc_icd, no_apc_lol = at(sens, "beta_apc", "ICD", 0.0), at(sens, "beta_apc", "LOL", 0.0)
dola0 = float(np.mean([c.dola_layers[0] for c in choices]))
untagged = float(np.nanmean([c.refocus_untagged_mc1 for c in choices]))
n_untagged = sum(c.n_untagged_rare for c in choices)
omegas = ", ".join(f"{w:g}" for w in sorted({c.lol_no_refocus.omega for c in choices}))
dola_text = (f"mostly the embedding layer ({dola0:.0%} of the test entities), whose prediction at \"is\" ignores the "
             "entity: subtracting it removes the popular-value prior the misconceptions come from"
             if dola0 > 0.5 else f"the embedding layer for {dola0:.0%} of the test entities")
Markdown(
    f"**What showed at the {result.preset} preset** (MC1 on the rare test entities, mean over {head.interval.n} seeds). "
    f"Greedy decoding finds the truth on {fmt(m['mc1_rare_greedy'], 2)} of them: the misconception wins. The headline "
    f"**{head.verdict.value}**: LOL reaches {fmt(m['mc1_rare_lol'], 2)}, {fmt(head.interval.mean, 2, sign=True)} over "
    f"the better of greedy and CD (CD: {fmt(m['mc1_rare_cd'], 2)}). ICD alone reaches {fmt(m['mc1_rare_icd'], 2)} "
    f"(the card's +0.10: **{result.claims[2].verdict.value}**), DoLa {fmt(m['mc1_rare_dola'], 2)}.\n\n"
    f"**Which part of LOL does the work here.** Refocusing alone (greedy on \"[BOS] [FACT] e is\") scores "
    f"{fmt(m['mc1_rare_refocus_only'], 2)}, {vs(m['mc1_rare_refocus_only'], m['mc1_rare_lol'])} LOL "
    f"(LOL − refocusing alone: {fmt(m['gain_over_refocus_only'], 2, sign=True)}); LOL without the lower layer scores "
    f"{fmt(m['mc1_rare_lol_no_lower'], 2)} ({fmt(m['gain_over_no_lower'], 2, sign=True)} for the lower layer). With the "
    f"refocusing off, the lower-layer fusion, tuned on its own (ω ∈ {{{omegas}}} chosen), gives "
    f"{fmt(m['mc1_rare_lol_no_refocus'], 2)}, {vs(m['mc1_rare_lol_no_refocus'], m['mc1_rare_icd'])} ICD "
    f"({fmt(m['gain_lower_layer_without_refocusing'], 2, sign=True)}). The refocusing is this strong because the "
    f"\"[FACT]\" tag precedes only true statements: the model learns a rule, \"after [FACT], not the popular "
    f"misconception\", that holds even for the {n_untagged} rare test entities (all seeds) whose truth was never seen "
    f"tagged (refocusing alone: {fmt(untagged, 2)} on them). The toy's instruction is close to an oracle, much stronger "
    f"than \"Answer truthfully\" is for a real LLM.\n\n"
    f"**What holds ICD back.** The plausibility constraint: where the truth's probability is below β_apc = "
    f"{p.beta_apc:g} times the misconception's, no contrast may choose it. With β_apc = 0 (the official DoLa and ICD "
    f"multiple-choice evaluations run with it off) ICD scores {fmt(no_apc_icd, 2)} instead of "
    f"{fmt(m['mc1_rare_icd'], 2)}, and LOL {fmt(no_apc_lol, 2)}, on the same models (sensitivity figure). DoLa's "
    f"premature layer is {dola_text}."
)

# %% [markdown]
# What this toy does **not** show: the paper's evidence is on 7B chat models (TruthfulQA MC1/MC2/MC3 and open-ended,
# FACTOR), with an amateur induced on a separate hallucination data set; here the amateur is fine-tuned on the
# corpus's own false statements, the instruction is a tag the model saw in training, and a 3-block model leaves little
# room between "lower" and "final" layers. Whether the lower-layer fusion helps in deeper models is left to the
# standard (4 blocks) and full (6 blocks) presets.

# %% [markdown]
# ## Try it
#
# Change α, ω, ℓ, β_apc, the amateur's fine-tuning steps, or turn the validation tuning off, then Train. The plot shows
# the training losses of the three models of each seed while they train.

# %%
import widgets

widgets.explorer("lol_decoding", metric="nll")

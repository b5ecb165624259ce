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
# # 01 · LoL — A Comparative Regularization Loss over Query Reformulation Losses for Pseudo-Relevance Feedback
#
# [arXiv 2204.11545](https://arxiv.org/abs/2204.11545) (SIGIR 2022) · family: **retrieval-recsys-applied**
#
# **What you will see:** on a synthetic corpus whose queries use other words than their relevant documents, query
# revisions that read more feedback documents drift (Rocchio badly, a learned reformulator slightly); LoL's hinge over
# the losses of nested-feedback revisions makes "more feedback, worse revision" rarer and the drift smaller.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
lam_cr = None     # LoL weight λ_cr on the comparative regularization; 0 is plain learned PRF
n_compare = None  # n: each query is revised 1 + n times per step
space = None      # "sparse" (BM25 term weights) or "dense" (LSA vectors)
mismatch = None   # probability that a query term is the searchers' synonym
query_len = None  # terms per query

# %%
import inspect
import math

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown

from labkit import viz
from labkit.core import fmt, overrides_from, resolve_params
from labkit.methods import lol_prf
from labkit.substrates import ranking
from labkit.substrates import retrieval as rt

overrides = overrides_from(lol_prf.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()
torch.set_num_threads(1)  # small tensors: one thread is faster than two on a small, shared CPU

# %% [markdown]
# ## The idea
#
# Pseudo-relevance feedback (PRF) rewrites a query $q$ from the top-$k$ documents $F_k = (d_1, \dots, d_k)$ of a first
# retrieval pass. A reformulator $f_\theta(q, F_k) = q^{(k)}$ outputs a new query **vector** that is scored against
# the frozen document vectors $D$ of the base retriever by the inner product, so the whole pipeline is
# differentiable. Its training loss is a softmax cross-entropy over the candidate documents, with the hardest
# (lowest-scoring) relevant document $d^+$ as the target and the other relevant documents masked out:
#
# $$\ell\big(q^{(k)}\big) = -\log \frac{\exp(q^{(k)}\!\cdot d^+/\tau)}{\sum_{j} \exp(q^{(k)}\!\cdot d_j/\tau)}.$$
#
# More feedback should help, but the extra documents are partly irrelevant, so a revision that read more can be
# **worse**. LoL revises each query $1+n$ times with nested feedback, $k_0 > k_1 > \dots > k_n$ drawn from
# $\{0, \dots, K\}$ ($k = 0$ is the query alone), and penalises every pair in which the revision that read more has
# the larger loss ("loss over losses"):
#
# $$\mathcal L_{\rm LoL} = \operatorname*{mean}_{a<b}\ \max\big(0,\ \ell(q^{(k_a)}) - \ell(q^{(k_b)})\big),\qquad
# \mathcal L = \lambda_{\rm pr}\operatorname*{mean}_j \ell(q^{(k_j)}) + \lambda_{\rm cr}\,\mathcal L_{\rm LoL}.$$
#
# $\lambda_{\rm cr} = 0$ is the same reformulator trained without LoL: the key baseline. Here the reformulator is a
# **gated Rocchio** (the card's teaching-scale stand-in for the paper's BERT):
# $q^{(k)} = \mathrm{normalize}\big(q + \sum_{j\le k} g_j\, d_j\big)$, $g_j = \mathrm{softplus}(\mathrm{MLP}(\cdot)) \ge 0$,
# where the MLP sees $d_j$'s first-pass score, its rank, and how well it agrees with the other documents of $F_k$.

# %% [markdown]
# ## The losses, and cases you can check by hand

# %%
print(inspect.getsource(lol_prf.reformulation_loss))
print(inspect.getsource(lol_prf.lol_regularization))

# %% [markdown]
# Four documents with scores $(2, 1, 0.5, 0)$, relevant $\{0, 2\}$, $\tau = 1$: the target is document 2 (the
# lower-scoring relevant one) and document 0 is masked, so $\ell = -0.5 + \log(e^{1} + e^{0.5} + e^{0}) \approx 1.180$.
# Three revisions with $k_0 > k_1 > k_2$ and losses $(3, 2, 4)$: only the pair $(k_0, k_1)$ violates the order
# (more feedback, loss 3 > 2), so $\mathcal L_{\rm LoL} = (1 + 0 + 0)/3$.

# %% tags=["nbval-check-output"]
loss = lol_prf.reformulation_loss(torch.tensor([[[2.0, 1.0, 0.5, 0.0]]]), torch.tensor([[True, False, True, False]]), 1.0)
print(f"reformulation loss {loss.item():.3f}  (hand: {-0.5 + math.log(math.e + math.exp(0.5) + 1):.3f})")
hinge = lol_prf.lol_regularization(torch.tensor([[3.0, 2.0, 4.0]]))
print(f"L_LoL {hinge.item():.3f}  (hand: {1 / 3:.3f})")
print(f"total with lam_cr = 1: {lol_prf.lol_total_loss(torch.tensor([[3.0, 2.0, 4.0]]), 1.0).item():.3f}  (hand: 3 + 1/3)")

# %% [markdown]
# ## The training loop
#
# Each step draws a batch of queries and $1+n$ nested revisions per query; every arm (one per $\lambda_{\rm cr}$) is
# trained on the **same** queries and revisions, so the only difference is the hinge. The scores of a revision follow
# from precomputed products because the score is linear in the query vector (`revision_scores`).

# %%
print(inspect.getsource(lol_prf.train_reformulators))

# %% [markdown]
# Run it on a tiny corpus (12 topics, 60 queries) for a few epochs, $\lambda_{\rm cr} \in \{0, 1\}$, and look at the
# mean loss of each revision size on the same queries.

# %%
tiny = rt.make_corpus(seed, n_super=4, topics_per_super=3, docs_per_topic=6, n_queries=60)
tiny_lists = lol_prf.feedback_lists(*lol_prf.retrieval_space(tiny, "sparse", 8), max_k=5)
tiny_model = lol_prf.GatedRocchio(5, hidden=16, n_arms=2)
lol_prf.train_reformulators(tiny_model, [0.0, 1.0], tiny_lists, tiny.relevant, epochs=10, batch=16, n_compare=1,
                            lr=3e-3, tau=0.05, generator=torch.Generator().manual_seed(seed))
tiny_scores, _ = lol_prf.revise_all_k(tiny_model, tiny_lists)
for a, name in enumerate(["lam_cr=0", "lam_cr=1"]):
    losses = lol_prf.reformulation_loss(tiny_scores[a], tiny.relevant, 0.05)
    print(f"{name}: mean loss by k = 0..5: {np.round(losses.mean(0).numpy(), 2)}, "
          f"violation rate V = {lol_prf.violation_rate(losses).mean():.3f}")

# %% [markdown]
# ## The data: a corpus with vocabulary mismatch
#
# `labkit.substrates.retrieval.make_corpus`: super-topics × topics × documents. Documents mix background words
# (Zipf), super-topic words (shared by sibling topics: hard negatives) and the concept words of their topic. Every
# concept has two surface forms: writers use the *document form*, searchers mostly the *query form* (a synonym, with
# probability `mismatch`). A query is a few concept terms (sometimes a super-topic term); its relevant documents are
# the documents of its topic. Two base retrievers: **BM25** (Lucene variant, checked against `bm25s` in the tests)
# and a small **dense** one, the rank-32 LSA of the BM25 matrix. The query alone retrieves poorly; the feedback
# documents carry the document forms.

# %% tags=["nbval-check-output"]
p = lol_prf.Knobs(**resolve_params(lol_prf.PARAMS, preset, overrides))  # the values the run below will use
corpus = lol_prf.make_world(p, seed)
print(f"{corpus.n_docs} documents, {corpus.n_terms} terms, {len(corpus.query_counts)} queries "
      f"({int(corpus.train.sum())} train / {int((~corpus.train).sum())} held out), "
      f"{int(corpus.relevant[0].sum())} relevant documents per query")
bm25 = rt.BM25(corpus.doc_counts)
for name, retriever in [("BM25 (sparse)", bm25), ("LSA (dense)", rt.LSADense(bm25, p.lsa_dim))]:
    s = retriever.scores(corpus.query_counts)
    print(f"{name:14s} no PRF: P@5 {fmt(ranking.precision_at_k(s, corpus.relevant, 5).mean().item(), 2)}, "
          f"Recall@20 {fmt(ranking.recall_at_k(s, corpus.relevant, 20).mean().item(), 2)}, "
          f"MAP {fmt(ranking.average_precision(s, corpus.relevant).mean().item(), 2)}")

# %%
kind = corpus.vocab_kind
q0 = int((~corpus.train).nonzero()[0])
words = {0: "background", 1: "super-topic", 2: "doc form", 3: "query form"}
query_terms = [f"t{t} ({words[int(kind[t])]})" for t in corpus.query_counts[q0].nonzero().squeeze(1).tolist()]
doc = int(corpus.relevant[q0].nonzero()[0])
shared = (corpus.query_counts[q0] > 0) & (corpus.doc_counts[doc] > 0)
print(f"held-out query {q0}: {', '.join(query_terms)}")
print(f"a relevant document shares {int(shared.sum())} of its terms; its concept terms: "
      f"{int(corpus.doc_counts[doc][kind == 2].sum())} document forms, {int(corpus.doc_counts[doc][kind == 3].sum())} query forms")
share = lambda c: float(c[:, kind == 3].sum() / c[:, kind >= 2].sum())  # noqa: E731
print(f"query forms among concept terms: queries {share(corpus.query_counts):.2f}, documents {share(corpus.doc_counts):.2f}")

# %% [markdown]
# ## Train: no PRF, Rocchio, learned PRF ($\lambda_{\rm cr} = 0$) and LoL

# %%
sweep_text = (f" The same call also trains $\\lambda_{{\\rm cr}} \\in \\{{{', '.join(f'{x:g}' for x in lol_prf.SWEEP_LAMS)}\\}}$."
              if p.sweep else "")
Markdown(f"Base retriever: **{'BM25' if p.space == 'sparse' else 'LSA dense'}**; first pass top-{p.max_k}. Two learned "
         f"arms, $\\lambda_{{\\rm cr}} = 0$ and $\\lambda_{{\\rm cr}} = {p.lam_cr:g}$, on the same batches and the same "
         f"$1 + n = {1 + p.n_compare}$ nested revisions per query, Adam (lr {p.lr:g}), τ = {p.tau:g}, "
         f"{max(1, round(2 * p.epochs / (1 + p.n_compare)))} epochs; Rocchio with $\\beta = {p.rocchio_beta:g}$; "
         f"one corpus per seed, {p.n_seeds} seeds; every number is measured on the held-out queries for every "
         f"$k = 0, \\dots, {p.max_k}$.{sweep_text}")

# %%
result = lol_prf.run(preset=preset, seed=seed, device=device, **overrides)
print(result.summary())

# %% [markdown]
# ## What happened
#
# **Quality as the feedback grows.** $k = 0$ is the query alone (dotted: no PRF). Rocchio gains the most from one
# document and then drifts down as irrelevant documents enter; the learned reformulator keeps most of the gain.
# Compare the two learned lines at large $k$.

# %%
result.figures["by_k_map"]

# %%
result.figures["by_k_ndcg"]

# %%
result.figures["by_k_recall"]

# %%
arms = {a.arm.key: a for a in result.extras["arms"]}
table = pd.DataFrame({f"{a.arm.label} {name}": getattr(a, field).mean(0)
                      for a in arms.values() for name, field in [("MAP", "map"), ("R@20", "recall")]})
table.index.name = "k"
print(table.round(3).to_string())

# %% [markdown]
# **The loss the hinge compares.** The mean reformulation loss falls with $k$ for both learned arms; LoL pays a
# little mean loss to make the order hold per query.

# %%
result.figures["by_k_loss"]

# %% [markdown]
# **How often more feedback gave a worse revision** (the card's violation rate $V$, all 15 pairs
# $k_{\rm more} > k_{\rm less}$ per query), and the per-query difference $\ell(k{=}K) - \ell(k{=}1)$.

# %%
result.figures["violation"]

# %%
result.figures["drift_histogram"]

# %% [markdown]
# **What the gate learned.** The gate of each feedback document in the revision with $K$ documents, split by whether
# the document is relevant: both arms learn to suppress irrelevant feedback; compare the gaps.

# %%
result.figures["gates"]

# %%
result.figures["training_map"]

# %% [markdown]
# ## The claim check
#
# Each claim compares one number per seed (each seed is a new corpus) with a margin fixed in the code before the
# run, and gives a three-way verdict from the 95% t-interval over seeds: **holds**, **does not hold**,
# **inconclusive** (the interval straddles the margin).
#
# - **Headline** (the card's measurable form of the paper's claim): LoL lowers the violation rate $V$ by at least
#   0.005 against $\lambda_{\rm cr} = 0$.
# - The paper: LoL makes PRF more robust as $k$ grows: MAP($k{=}K$) − MAP($k{=}1$), LoL minus $\lambda_{\rm cr}=0$, ≥ 0.
# - The card: LoL keeps Recall@20 at $k = K$ within 0.01 of $\lambda_{\rm cr} = 0$; PRF helps at all for both arms.

# %% tags=["nbval-check-output"]
for c in result.claims:
    print(c)

# %%
m = result.metrics
head, robust, recall, helps_lol, helps_prf = result.claims
lol_better = sum(v < 0 for v in head.values)
beyond = sum(v <= lol_prf.VIOLATION_MARGIN for v in head.values)
why = ("" if head.verdict.value != "inconclusive" else
       f" The mean difference is past the card's margin ({fmt(lol_prf.VIOLATION_MARGIN, 3, sign=True)}) but the "
       f"interval is not: {beyond} of {len(head.values)} seeds are past it, and the per-seed differences "
       f"({', '.join(fmt(v, 3, sign=True) for v in head.values)}) spread too much for "
       f"{len(head.values)} seeds. The sign is consistent; the size is thin.")
Markdown(
    f"**What showed at the {result.preset} preset** (read from this run). Headline, LoL lowers $V$ by ≥ 0.005: "
    f"**{head.verdict.value}** (difference {fmt(head.interval.mean, 3, sign=True)}, 95% interval "
    f"[{fmt(head.interval.low, 3, sign=True)}, {fmt(head.interval.high, 3, sign=True)}] over {head.interval.n} seeds; "
    f"$V$ lower with LoL in {lol_better} of {len(head.values)} seeds; V = {fmt(m['violation_lol'], 3)} with LoL, "
    f"{fmt(m['violation_prf'], 3)} without, {fmt(m['violation_rocchio'], 3)} for Rocchio).{why} "
    f"**The drift:** from $k = 1$ to $k = {result.extras['max_k']}$ MAP goes {fmt(m['map_k1_rocchio'], 3)} → "
    f"{fmt(m['map_kmax_rocchio'], 3)} for Rocchio, {fmt(m['map_k1_prf'], 3)} → {fmt(m['map_kmax_prf'], 3)} for "
    f"$\\lambda_{{\\rm cr}} = 0$ and {fmt(m['map_k1_lol'], 3)} → {fmt(m['map_kmax_lol'], 3)} with LoL "
    f"(LoL drifts less: **{robust.verdict.value}**). Recall@20 at $k = K$: {fmt(m['recall_kmax_lol'], 3)} with LoL, "
    f"{fmt(m['recall_kmax_prf'], 3)} without (within 0.01: **{recall.verdict.value}**); the query alone: "
    f"{fmt(m['recall_no_prf'], 3)} (PRF helps: **{helps_lol.verdict.value}** / **{helps_prf.verdict.value}**)."
)

# %% [markdown]
# The quick preset already uses the paper's own LoL setting ($\lambda_{\rm cr} = 1$, $n = 1$, as in the official
# README); the standard preset trains longer on more queries and adds $\lambda_{\rm cr} \in \{0.5, 2\}$
# (`preset = "standard"`, a few minutes), to see whether the effect grows with $\lambda_{\rm cr}$ and with data.

# %%
quick_size = result.preset == "quick" and p.n_queries == 600
Markdown(
    (
        f"**The size matters for the headline.** This run used {p.n_queries} queries (half to train, half held out) "
        f"and {p.epochs} epochs; the quick preset is cut to 600 queries (the card's setting is 400 + 400) so that the "
        "notebook fits about 20 s on two CPU cores. At 800 queries (the quick size before that cut; measured here, 5 "
        "seeds) the headline was **inconclusive**: LoL − ($\\lambda_{\\rm cr} = 0$) in $V$ was −0.009, interval "
        "[−0.014, −0.003], its mean past the margin but not its interval, with $V$ = 0.222 for LoL and 0.231 without and "
        "a MAP drift from $k = 1$ to $K$ of −0.001 with LoL and −0.007 without. In this run the "
        f"$\\lambda_{{\\rm cr}} = 0$ arm {'drifts more' if m['violation_prf'] > 0.231 else 'drifts no more'} "
        f"($V$ = {fmt(m['violation_prf'], 3)}, MAP drift "
        f"{fmt(m['map_kmax_prf'] - m['map_k1_prf'], 3, sign=True)}; LoL {fmt(m['violation_lol'], 3)} and "
        f"{fmt(m['map_kmax_lol'] - m['map_k1_lol'], 3, sign=True)})"
        f"{', so LoL has more drift to remove' if m['violation_prf'] > 0.231 else ''}: difference "
        f"{fmt(head.interval.mean, 3, sign=True)}, interval [{fmt(head.interval.low, 3, sign=True)}, "
        f"{fmt(head.interval.high, 3, sign=True)}], **{head.verdict.value}**. Trained on 400 queries instead of 300, "
        "the reformulator without LoL suppressed more of the drift on its own, and LoL's measured effect sat closer to "
        "the card's margin: the verdict at this margin is a thin one either way."
    )
    if quick_size
    else f"This run used {p.n_queries} queries (half to train, half held out) and {p.epochs} epochs."
)

# %% [markdown]
# What this toy does **not** show: the paper's gains in MRR@10 / nDCG@10 on MS MARCO and TREC DL with BERT
# reformulators over ANCE and uniCOIL. Here the reformulator is a small gated Rocchio that already learns, from the
# reformulation loss alone, to down-weight feedback documents that disagree with the rest, so the learned
# $\lambda_{\rm cr} = 0$ arm drifts only a little and LoL's effect is a thin one: the *mechanism* (fewer violations,
# a flatter curve over $k$) at equal recall, not an effectiveness gain over the best $k$. In the dense (LSA) space
# PRF itself helps little on this corpus (try `space = "dense"`).

# %% [markdown]
# ## Try it
#
# Change $\lambda_{\rm cr}$, the number of compared revisions $n$, the space, the query length and the mismatch, then
# Train. The plot shows the held-out MAP (revision with $K$ documents) of each arm and seed while it trains.

# %%
import widgets

widgets.explorer("lol_prf", metric="map")

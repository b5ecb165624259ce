"""LoL PRF (01): BM25 against bm25s, the dense LSA retriever against scikit-learn, the corpus, the reformulation loss
and the LoL hinge against hand computations (and torch's margin ranking loss), the revisions, the claims, a run."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import labkit.core.params as params_module
from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.methods import lol_prf
from labkit.substrates import retrieval as rt

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def small_corpus():
    return rt.make_corpus(3, n_super=4, topics_per_super=3, docs_per_topic=6, n_queries=60)


def small_lists(corpus, space="sparse", max_k=4):
    queries, docs = lol_prf.retrieval_space(corpus, space, 8)
    return lol_prf.feedback_lists(queries, docs, max_k), docs


# --- the retrievers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k1, b", [(1.5, 0.75), (1.2, 0.3)])
def test_bm25_scores_equal_bm25s_lucene(small_corpus, k1, b):
    """The same tokens, k1 and b; bm25s's default method "lucene": idf = log(1 + (N − df + 0.5)/(df + 0.5)) and
    tf/(tf + k1·(1 − b + b·|d|/avgdl)). A query term typed twice counts twice in both."""
    bm25s = pytest.importorskip("bm25s")
    reference = bm25s.BM25(method="lucene", k1=k1, b=b)
    reference.index(small_corpus.tokens(small_corpus.doc_counts), show_progress=False)
    ours = rt.BM25(small_corpus.doc_counts, k1=k1, b=b).scores(small_corpus.query_counts)
    for q, tokens in enumerate(small_corpus.tokens(small_corpus.query_counts)):
        known = [t for t in tokens if t in reference.vocab_dict]  # terms no document uses score 0 in both
        expected = reference.get_scores(known) if known else np.zeros(small_corpus.n_docs)
        np.testing.assert_allclose(ours[q].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert (small_corpus.query_counts > 1).any()  # some query repeats a term: the repeat case is exercised


def test_bm25_by_hand():
    # two documents: d0 = "a a b", d1 = "b"; avgdl = 2; k1 = 1, b = 1
    docs = T([[2.0, 1.0], [0.0, 1.0]])
    bm = rt.BM25(docs, k1=1.0, b=1.0)
    idf_a, idf_b = math.log(1 + 1.5 / 1.5), math.log(1 + 0.5 / 2.5)
    # w(a, d0) = idf_a · 2/(2 + 1·(3/2)), w(b, d0) = idf_b · 1/(1 + 3/2), w(b, d1) = idf_b · 1/(1 + 1/2)
    expected = [[idf_a * 2 / 3.5, idf_b / 2.5], [0.0, idf_b / 1.5]]
    assert bm.doc_vectors.tolist() == pytest.approx([pytest.approx(r, abs=1e-6) for r in expected])
    assert bm.scores(T([[1.0, 2.0]]))[0].tolist() == pytest.approx([expected[0][0] + 2 * expected[0][1],
                                                                    2 * expected[1][1]], abs=1e-6)  # fmt: skip


def test_lsa_dense_matches_sklearn_truncated_svd(small_corpus):
    decomposition = pytest.importorskip("sklearn.decomposition")
    bm = rt.BM25(small_corpus.doc_counts)
    dense = rt.LSADense(bm, dim=6)
    svd = decomposition.TruncatedSVD(6, algorithm="arpack", random_state=0).fit(bm.doc_vectors.double().numpy())
    ref = svd.transform(bm.doc_vectors.double().numpy())
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    # the basis is defined up to signs: compare the cosine matrices
    ours = dense.doc_vectors.double().numpy()
    np.testing.assert_allclose(ours @ ours.T, ref @ ref.T, atol=1e-4)
    assert dense.doc_vectors.norm(dim=1).numpy() == pytest.approx(np.ones(small_corpus.n_docs), abs=1e-5)


def test_inner_scores_sparse_equals_dense():
    docs = torch.rand(7, 5) * (torch.rand(7, 5) > 0.6)
    queries = torch.randn(2, 3, 5)
    assert torch.allclose(rt.inner_scores(queries, docs.to_sparse()), rt.inner_scores(queries, docs), atol=1e-6)
    assert rt.top_k(T([[0.1, 0.5, 0.5, 0.2]]), 3).tolist() == [[1, 2, 3]]  # ties keep index order


# --- the corpus ----------------------------------------------------------------------------------------------------


def test_corpus_relevance_and_vocabulary_mismatch():
    c = rt.make_corpus(0, n_super=5, topics_per_super=4, docs_per_topic=8, n_queries=400, mismatch=0.8)
    assert c.relevant.sum(1).unique().tolist() == [8]  # the docs of the query's topic
    assert torch.equal(c.relevant, c.query_topic[:, None] == c.doc_topic[None, :])
    assert 0 < c.train.sum() < len(c.train)
    kind = c.vocab_kind

    def query_form_share(counts):
        concept = counts[:, kind >= 2].sum()
        return float(counts[:, kind == 3].sum() / concept)

    # queries use the searchers' synonym ~80% of the time, documents ~15%: the mismatch
    assert query_form_share(c.query_counts) == pytest.approx(0.8, abs=0.06)
    assert query_form_share(c.doc_counts) == pytest.approx(0.15, abs=0.03)
    assert (c.doc_counts.sum(1) == 60).all()


# --- the reformulator and the losses ---------------------------------------------------------------------------


def test_reformulation_loss_by_hand():
    # one revision, 4 docs, relevant {0, 2}: the target is the lower-scoring relevant doc (2), doc 0 is masked out
    scores = T([[[2.0, 1.0, 0.5, 0.0]]])
    relevant = T([[True, False, True, False]])
    loss = lol_prf.reformulation_loss(scores, relevant, tau=1.0)
    expected = -(0.5 - math.log(math.exp(1.0) + math.exp(0.5) + math.exp(0.0)))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # τ = 0.5 doubles every logit; a single relevant doc is its own target
    loss = lol_prf.reformulation_loss(T([[[1.0, 0.0]]]), T([[False, True]]), tau=0.5)
    assert loss.item() == pytest.approx(-(0.0 - math.log(math.exp(2.0) + 1.0)), abs=1e-6)


def test_lol_hinge_by_hand_and_against_margin_ranking_loss():
    # columns in descending feedback: more feedback with a larger loss pays the difference
    assert lol_prf.lol_regularization(T([[3.0, 1.0], [1.0, 3.0]])).tolist() == pytest.approx([2.0, 0.0])
    # R = 3 (k_0 > k_1 > k_2), losses (3, 2, 4): pairs (0,1) → 1, (0,2) → 0, (1,2) → 0; mean 1/3
    assert lol_prf.lol_regularization(T([[3.0, 2.0, 4.0]])).item() == pytest.approx(1 / 3)
    losses = torch.randn(6, 4)
    a, b = torch.triu_indices(4, 4, offset=1)
    # max(0, ℓ_a − ℓ_b) = margin_ranking_loss(s_a, s_b, y = 1, margin 0) with scores s = −ℓ
    ref = F.margin_ranking_loss(-losses[:, a], -losses[:, b], torch.ones(6, len(a)), margin=0.0, reduction="none")
    assert torch.allclose(lol_prf.lol_regularization(losses), ref.mean(-1))


def test_total_loss_by_hand():
    losses = T([[3.0, 1.0], [1.0, 3.0]])  # mean ℓ = 2, mean L_LoL = (2 + 0)/2 = 1
    assert lol_prf.lol_total_loss(losses, 0.0).item() == pytest.approx(2.0)
    assert lol_prf.lol_total_loss(losses, 1.5).item() == pytest.approx(3.5)
    stacked = lol_prf.lol_total_loss(torch.stack([losses, losses]), T([0.0, 1.0]))  # one λ per arm
    assert stacked.tolist() == pytest.approx([2.0, 3.0])


def test_violation_rate_by_hand():
    # columns k = 0, 1, 2: pairs (1>0), (2>0), (2>1)
    rates = lol_prf.violation_rate(T([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 3.0, 2.0]]))
    assert rates.tolist() == pytest.approx([0.0, 1.0, 2 / 3])


def test_revisions_are_distinct_descending_nested_sizes():
    ks = lol_prf.sample_revisions(500, 5, 2, torch.Generator().manual_seed(0))
    assert ks.shape == (500, 3)
    assert (ks[:, :-1] > ks[:, 1:]).all() and ks.min() >= 0 and ks.max() <= 5
    assert set(ks.flatten().tolist()) == set(range(6))  # k = 0 (the query alone) is drawn too


@pytest.mark.parametrize("space", ["sparse", "dense"])
def test_revision_scores_equal_scoring_the_revised_vector(small_corpus, space):
    lists, docs = small_lists(small_corpus, space)
    model = lol_prf.GatedRocchio(lists.max_k, hidden=8, n_arms=2)
    ks = torch.randint(0, lists.max_k + 1, (len(lists.query), 3))
    vectors, gates = model(lists, ks)
    fast = lol_prf.revision_scores(lists, gates)
    assert torch.allclose(fast, rt.inner_scores(vectors, docs), atol=1e-5)
    # k = 0 is the query alone, exactly: no gate, the base scores
    zero = torch.zeros_like(ks)
    assert torch.equal(model.gates(lists, zero), torch.zeros(2, *ks.shape, lists.max_k))
    assert torch.allclose(lol_prf.revision_scores(lists, model.gates(lists, zero))[0, :, 0], lists.base_scores)


def test_rocchio_is_the_constant_gate(small_corpus):
    lists, docs = small_lists(small_corpus)
    ks = torch.arange(lists.max_k + 1).expand(len(lists.query), -1)
    scores, gates = lol_prf.revise_all_k(None, lists, beta=0.75)
    assert torch.allclose(scores[0], rt.inner_scores(lol_prf.rocchio(lists, ks, beta=0.75), docs), atol=1e-5)
    assert gates[0, 0, 2].tolist() == pytest.approx([0.375, 0.375, 0.0, 0.0])  # k = 2: β/k on the first two


def test_gate_features_by_hand():
    cos = T([[[1.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 1.0]]])
    lists = lol_prf.FeedbackLists(None, None, T([[0, 1, 2]]), T([[0.9, 0.7, 0.4]]), cos, None, None, None)
    x = lol_prf.gate_features(lists, T([[2, 3]]))  # [1, 2 revisions, 3 docs, 5 + 3]
    assert x[0, 0, :, 2].tolist() == pytest.approx([0.5, 0.5, 0.4])  # agreement within F_2 (d_2 outside: (.1+.3)/1)
    assert x[0, 1, :, 2].tolist() == pytest.approx([0.3, 0.4, 0.2])  # within F_3: mean over the two others
    assert x[0, 0, :, 1].tolist() == pytest.approx([0.0, -0.2, -0.5])  # q·d_j − q·d_1
    assert x[0, 1, 0, 4].item() == pytest.approx(1.0) and x[0, 1, 1, 5:].tolist() == [0.0, 1.0, 0.0]


def test_arms_trained_together_equal_an_arm_trained_alone(small_corpus):
    lists, _ = small_lists(small_corpus)
    rel = small_corpus.relevant
    kw = dict(epochs=2, batch=8, n_compare=1, lr=1e-2, tau=0.05)
    torch.manual_seed(0)
    both = lol_prf.GatedRocchio(lists.max_k, hidden=8, n_arms=2)
    alone = lol_prf.GatedRocchio(lists.max_k, hidden=8, n_arms=1)
    with torch.no_grad():
        for p_alone, p_both in zip(alone.parameters(), both.parameters()):
            p_alone.copy_(p_both[1:])
    lol_prf.train_reformulators(both, [0.0, 1.0], lists, rel, generator=torch.Generator().manual_seed(1), **kw)
    lol_prf.train_reformulators(alone, [1.0], lists, rel, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.allclose(both.w1[1], alone.w1[0], atol=1e-5)
    assert not torch.allclose(both.w1[0], both.w1[1], atol=1e-4)  # λ_cr changed the training


def test_a_huge_learning_rate_diverges_and_names_the_series(monkeypatch):
    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))
    with pytest.raises(DivergenceError, match=r"PRF \(λ_cr=0\)"):
        lol_prf.run(lr=1e12, n_seeds=1, epochs=2, n_super=4, n_queries=80, progress=False, record=False)


# --- the claims ------------------------------------------------------------------------------------------------


def test_violation_claim_three_ways():
    prf = [0.24, 0.24, 0.22, 0.23, 0.23]
    holds = lol_prf.violation_claim([0.22, 0.225, 0.205, 0.215, 0.214], prf, 1.0)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == -0.005
    fails = lol_prf.violation_claim([0.25, 0.25, 0.23, 0.24, 0.241], prf, 1.0)
    assert fails.verdict is Verdict.DOES_NOT_HOLD
    assert lol_prf.violation_claim([0.23, 0.25, 0.2, 0.24, 0.22], prf, 1.0).verdict is Verdict.INCONCLUSIVE
    assert lol_prf.violation_claim([math.nan, 0.2, 0.2, 0.2, 0.2], prf, 1.0).verdict is Verdict.INCONCLUSIVE


def test_robustness_and_recall_claims_three_ways():
    flat = np.array([[0.6, 0.9, 0.9], [0.6, 0.8, 0.8], [0.6, 0.85, 0.85]])
    drop = flat - np.array([0, 0, 0.02])
    assert lol_prf.robustness_claim(flat, drop, 2).verdict is Verdict.HOLDS
    assert lol_prf.robustness_claim(drop, flat, 2).verdict is Verdict.DOES_NOT_HOLD
    nan = flat.copy()
    nan[0, -1] = math.nan
    assert lol_prf.robustness_claim(nan, drop, 2).verdict is Verdict.INCONCLUSIVE
    base = [0.94, 0.93, 0.95]
    assert lol_prf.recall_claim([0.936, 0.927, 0.945], base, 5).verdict is Verdict.HOLDS  # within 0.01
    assert lol_prf.recall_claim([0.90, 0.89, 0.91], base, 5).verdict is Verdict.DOES_NOT_HOLD
    assert lol_prf.prf_helps_claim([0.9, 0.91, 0.92], [0.6, 0.62, 0.61], "LoL", 5).verdict is Verdict.HOLDS
    assert lol_prf.prf_helps_claim([0.5, 0.51, 0.52], [0.6, 0.62, 0.61], "LoL", 5).verdict is Verdict.DOES_NOT_HOLD


# --- knobs and a small run -----------------------------------------------------------------------------------------


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="n_compare"):
        lol_prf.run(n_compare=6, max_k=5)
    with pytest.raises(ValueError, match="batch"):
        lol_prf.run(batch=2, n_compare=2)
    with pytest.raises(ValueError, match="documents"):
        lol_prf.run(n_super=1, topics_per_super=1, docs_per_topic=5)
    with pytest.raises(ValueError, match="space"):
        lol_prf.run(space="hybrid")


def test_small_run_has_a_headline_and_finite_metrics():
    result = lol_prf.run(n_seeds=3, epochs=2, n_super=4, n_queries=80, log_every=1, progress=False, record=False)
    assert isinstance(result, Result) and result.claims[0].headline
    assert [c.headline for c in result.claims] == [True, False, False, False, False]
    assert all(math.isfinite(v) for v in result.metrics.values())
    arms = {a.arm.key: a for a in result.extras["arms"]}
    assert set(arms) == {"rocchio", "prf", "lol"} and arms["lol"].map.shape == (3, 6)
    # every arm's k = 0 is the query alone: the same numbers as no PRF
    for a in arms.values():
        assert a.map[:, 0] == pytest.approx(result.extras["baseline"].map, abs=1e-6)
    v = np.array(arms["lol"].violation) - np.array(arms["prf"].violation)
    assert result.claims[0].values == pytest.approx(tuple(v), abs=1e-12)
    assert set(result.history["series"]) == {"PRF (λ_cr=0)", "LoL (λ_cr=1)"}
    assert {"by_k_map", "by_k_recall", "violation", "drift_histogram", "gates"} <= set(result.figures)


def test_sweep_and_dense_space_run():
    result = lol_prf.run(n_seeds=1, epochs=1, n_super=4, n_queries=40, space="dense", sweep=True, n_compare=2,
                         progress=False, record=False)  # fmt: skip
    assert [a.arm.key for a in result.extras["arms"]] == ["rocchio", "prf", "lol", "lol_0.5", "lol_2"]
    assert len(result.claims[0].values) == 1 and "1 seed" in str(result.claims[0])


@pytest.mark.slow
def test_quick_preset_runs():
    result = lol_prf.run("quick", progress=False, record=False)
    assert len(result.claims[0].values) == 5
    m = result.metrics
    assert m["recall_kmax_lol"] > m["recall_no_prf"] and m["map_kmax_rocchio"] < m["map_k1_rocchio"]


def test_method_file_is_the_paper_only():
    source = (Path(lol_prf.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2204.11545" in source
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment", "figures"):
        assert banned not in source

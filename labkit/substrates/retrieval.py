"""A synthetic retrieval world with vocabulary mismatch, a BM25 sparse retriever and a small dense (LSA) retriever.

Shared by the retrieval methods (LoL PRF first). Everything is generated from a seed; nothing is downloaded.

The corpus (:func:`make_corpus`): ``n_super`` super-topics × ``topics_per_super`` topics × ``docs_per_topic`` docs.
The vocabulary has three kinds of terms:

- background terms shared by every document (Zipf frequencies), carrying no topic;
- super-topic terms shared by the topics of one super-topic (they make sibling topics look alike: hard negatives);
- per topic, ``concepts_per_topic`` concepts, each with TWO surface forms: a *document form* (what writers use) and a
  *query form* (what searchers type, a synonym). Documents use the document form with probability 1 − ``doc_synonym``;
  queries use the query form with probability ``mismatch``. That is the vocabulary mismatch: a short query often
  shares few terms with the documents that answer it, and pseudo-relevance feedback can bring the document forms in.

A query is short (``query_len`` terms: concept terms of its topic, sometimes a super-topic term); its relevant
documents are the ``docs_per_topic`` documents of its topic.

Retrievers, both linear in a query vector so that a reformulator can work in their vector space:

- :class:`BM25` (Lucene variant, the default of ``bm25s``): document vectors are BM25 term weights
  w(t, d) = idf(t) · tf / (tf + k1·(1 − b + b·|d|/avgdl)), idf(t) = log(1 + (N − df + 0.5)/(df + 0.5)), and the
  query vector is the query's term counts, so score(q, d) = q · w(·, d) is the BM25 score (a repeated query term
  counts twice, as in ``bm25s``).
- :class:`LSADense`: a small dense retriever, the rank-r truncated SVD of the BM25 document matrix (latent semantic
  analysis). Documents and queries are projected onto the top-r right singular vectors and L2-normalised; the score is
  the inner product (cosine). Co-occurrence in documents puts a concept's two forms close, so it bridges some of the
  mismatch, not all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["BM25", "Corpus", "LSADense", "inner_scores", "make_corpus", "top_k", "zipf"]


def zipf(n: int, s: float = 1.0) -> np.ndarray:
    """Zipf probabilities p_r ∝ 1/r^s over ranks r = 1..n, [n]."""
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


@dataclass(frozen=True)
class Corpus:
    """Documents and queries as term-count matrices, with the relevance of every (query, document).

    ``doc_counts [N, V]`` and ``query_counts [Q, V]`` are term counts (float32); ``doc_topic [N]`` and
    ``query_topic [Q]`` the topic ids; ``relevant [Q, N]`` is True where the document's topic is the query's.
    ``train [Q]`` marks the training queries (the rest are held out). ``vocab_kind [V]``: 0 background,
    1 super-topic, 2 document form, 3 query form.
    """

    doc_counts: Tensor
    query_counts: Tensor
    doc_topic: Tensor
    query_topic: Tensor
    relevant: Tensor
    train: Tensor
    vocab_kind: Tensor

    @property
    def n_docs(self) -> int:
        return self.doc_counts.shape[0]

    @property
    def n_terms(self) -> int:
        return self.doc_counts.shape[1]

    def tokens(self, counts: Tensor) -> list[list[str]]:
        """Each row of a count matrix as a list of term strings ``"t<id>"`` (repeats kept), for ``bm25s``."""
        out = []
        for row in counts.round().long().tolist():
            out.append([f"t{t}" for t, c in enumerate(row) for _ in range(c)])
        return out


def make_corpus(
    seed: int,
    *,
    n_super: int = 20,
    topics_per_super: int = 5,
    docs_per_topic: int = 10,
    n_queries: int = 800,
    train_share: float = 0.5,
    n_background: int = 400,
    super_terms: int = 15,
    concepts_per_topic: int = 8,
    doc_len: int = 60,
    query_len: int = 3,
    mismatch: float = 0.8,
    doc_synonym: float = 0.15,
    mix: tuple[float, float, float] = (0.5, 0.35, 0.15),
) -> Corpus:
    """The synthetic corpus (see the module docstring). ``mix`` = the shares of background, super-topic and concept
    terms in a document. Queries draw their topic uniformly; concept terms follow a Zipf law within the topic."""
    if not 0 <= mismatch <= 1 or not 0 <= doc_synonym <= 1:
        raise ValueError("mismatch and doc_synonym are probabilities in [0, 1]")
    rng = np.random.default_rng(seed)
    n_topics = n_super * topics_per_super
    # term ids: [background | super-topic terms | per topic: concept doc forms, then concept query forms]
    sup0 = n_background
    con0 = sup0 + n_super * super_terms
    n_terms = con0 + n_topics * concepts_per_topic * 2
    kind = np.zeros(n_terms, np.int64)
    kind[sup0:con0] = 1
    per_topic = np.arange(concepts_per_topic * 2) < concepts_per_topic  # doc forms first
    kind[con0:] = np.tile(np.where(per_topic, 2, 3), n_topics)
    p_bg, p_sup, p_con = zipf(n_background, 1.0), zipf(super_terms, 0.7), zipf(concepts_per_topic, 0.8)

    def concept_terms(topic: int, n: int, p_query_form: float) -> np.ndarray:
        concept = rng.choice(concepts_per_topic, size=n, p=p_con)
        query_form = rng.random(n) < p_query_form
        return con0 + topic * 2 * concepts_per_topic + concept + concepts_per_topic * query_form

    def super_term(topic: int, n: int) -> np.ndarray:
        return sup0 + (topic // topics_per_super) * super_terms + rng.choice(super_terms, size=n, p=p_sup)

    doc_topic = np.repeat(np.arange(n_topics), docs_per_topic)
    docs = np.zeros((len(doc_topic), n_terms), np.float32)
    for i, t in enumerate(doc_topic):
        n_bg, n_sup, n_con = rng.multinomial(doc_len, mix)
        terms = np.concatenate(
            [rng.choice(n_background, size=n_bg, p=p_bg), super_term(t, n_sup), concept_terms(t, n_con, doc_synonym)]
        )
        np.add.at(docs[i], terms, 1.0)
    query_topic = rng.integers(0, n_topics, size=n_queries)
    queries = np.zeros((n_queries, n_terms), np.float32)
    for i, t in enumerate(query_topic):
        # mostly concept terms; one term in three is a super-topic term (an ambiguous query)
        n_sup = rng.binomial(query_len, 1 / 3)
        n_sup = min(n_sup, query_len - 1)
        terms = np.concatenate([super_term(t, n_sup), concept_terms(t, query_len - n_sup, mismatch)])
        np.add.at(queries[i], terms, 1.0)
    train = np.zeros(n_queries, bool)
    train[rng.permutation(n_queries)[: int(round(train_share * n_queries))]] = True
    return Corpus(
        doc_counts=torch.from_numpy(docs),
        query_counts=torch.from_numpy(queries),
        doc_topic=torch.from_numpy(doc_topic),
        query_topic=torch.from_numpy(query_topic),
        relevant=torch.from_numpy(query_topic[:, None] == doc_topic[None, :]),
        train=torch.from_numpy(train),
        vocab_kind=torch.from_numpy(kind),
    )


class BM25:
    """BM25, Lucene variant (idf = log(1 + (N − df + 0.5)/(df + 0.5)), tf part without the (k1 + 1) factor), as
    ``bm25s.BM25(method="lucene", k1=k1, b=b)``; linear in the query's term counts."""

    def __init__(self, doc_counts: Tensor, k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        n_docs = doc_counts.shape[0]
        # df(t) = number of documents containing t                                       [V]
        df = (doc_counts > 0).sum(0).double()
        # idf(t) = log(1 + (N − df + 0.5)/(df + 0.5))                                    [V]
        self.idf = torch.log1p((n_docs - df + 0.5) / (df + 0.5)).float()
        length = doc_counts.sum(1, keepdim=True)  # |d|                                 [N, 1]
        norm = k1 * (1 - b + b * length / length.mean())
        # w(t, d) = idf(t) · tf / (tf + k1·(1 − b + b·|d|/avgdl))                         [N, V]
        self.doc_vectors = self.idf * doc_counts / (doc_counts + norm)

    def query_vectors(self, query_counts: Tensor) -> Tensor:
        """The query vector of BM25 is its term counts, [Q, V]."""
        return query_counts.float()

    def scores(self, query_counts: Tensor) -> Tensor:
        """BM25(q, d) = Σ_t count(t, q) · w(t, d), [Q, N]."""
        return self.query_vectors(query_counts) @ self.doc_vectors.T


class LSADense:
    """A small dense retriever: rank-``dim`` LSA of the BM25 document matrix, unit vectors, cosine scores."""

    def __init__(self, bm25: BM25, dim: int = 32):
        # W = U S Vᵀ (truncated to rank r); a text x maps to normalize(x Vᵣ)              Vᵣ: [V, r]
        _, _, v = torch.linalg.svd(bm25.doc_vectors.double(), full_matrices=False)
        self.projection = v[:dim].T.float()
        self.idf = bm25.idf
        self.doc_vectors = self.embed(bm25.doc_vectors)

    def embed(self, weighted: Tensor) -> Tensor:
        """Project term-weight rows onto the latent space and L2-normalise, [*, r]."""
        z = weighted @ self.projection
        return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def query_vectors(self, query_counts: Tensor) -> Tensor:
        """A query is embedded from its idf-weighted term counts, [Q, r] (unit norm)."""
        return self.embed(query_counts.float() * self.idf)

    def scores(self, query_counts: Tensor) -> Tensor:
        return self.query_vectors(query_counts) @ self.doc_vectors.T


def top_k(scores: Tensor, k: int) -> Tensor:
    """Indices of the k best documents per query, best first (stable: ties keep index order), [Q, k]."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def inner_scores(queries: Tensor, docs: Tensor) -> Tensor:
    """q·d for every query vector and document, [..., N] for ``queries [..., D]`` and ``docs [N, D]`` (dense, or a
    sparse COO matrix: BM25 document vectors are mostly zeros; the sparse product keeps the gradient in ``queries``)."""
    flat = queries.reshape(-1, queries.shape[-1])
    out = torch.sparse.mm(docs, flat.T).T if docs.is_sparse else flat @ docs.T
    return out.reshape(*queries.shape[:-1], docs.shape[0])

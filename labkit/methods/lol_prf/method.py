"""LoL — "LoL: A Comparative Regularization Loss over Query Reformulation Losses for Pseudo-Relevance Feedback"
(Zhu et al., SIGIR 2022), arXiv 2204.11545.

Pseudo-relevance feedback (PRF) rewrites a query q from the top-k documents F_k = (d_1..d_k) of a first retrieval
pass. A reformulator f_θ(q, F_k) → q^(k) works in the retriever's vector space: the revised query vector is scored
against the frozen document vectors D by the inner product, so the whole pipeline is differentiable.

    reformulation loss   ℓ(q^(k)) = −log softmax_j(q^(k)·D_j / τ)[d⁺],   d⁺ = the LOWEST-scoring relevant doc,
                                                                         the other relevant docs masked out
    revisions            k_0 > k_1 > … > k_n drawn without replacement from {0, 1, …, K}; revision j reads F_{k_j}
                         (nested prefixes of the same ranked list; k = 0 is the query alone)
    comparative reg.     L_LoL = mean_{a<b} max(0, ℓ(q^(k_a)) − ℓ(q^(k_b)))    (more feedback must not lose more)
    total                L = λ_pr · mean_j ℓ(q^(k_j)) + λ_cr · L_LoL           (λ_cr = 0: plain learned PRF)

The paper's reformulator is a BERT reading "[CLS] q [SEP] d_1 … d_k"; here (the card's teaching scale) it is a gated
Rocchio, q^(k) = normalize(q + Σ_{j≤k} g_j·d_j) with g_j = softplus(MLP(features of d_j within F_k)), so k = 0 is
exactly the original query. The unit-norm revision needs the temperature τ in the loss. :func:`train_reformulators`
is the training loop (several arms, e.g. λ_cr = 0 and λ_cr = 1, on the same batches and the same revisions).

Checked against the official code (github.com/zycdev/LoL, trainer.py and util.py): the target is the argmin of the
current scores over the query's positives, the other positives set to −∞; the hinge is a RankNet-style pairwise
hinge on the effects −ℓ with labels 1+n … 1 (more feedback = higher label), i.e. margin_ranking_loss(−ℓ_a, −ℓ_b,
+1, margin 0) = max(0, ℓ_a − ℓ_b), averaged over all pairs. The official candidates are a fixed matrix of training
passages; here every document of the (small) corpus is a candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.substrates.retrieval import inner_scores, top_k

# --- the first pass and the feedback lists ---------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackLists:
    """Each query's vector and its top-K first-pass documents (best first): everything the reformulator reads.

    ``query [Q, D]`` (unit norm), ``feedback [Q, K, D]`` the feedback documents' vectors, ``doc_ids [Q, K]``,
    ``first_scores [Q, K]`` = q·d_j, ``doc_cos [Q, K, K]`` the cosines between feedback documents. Because every
    score is linear in the query vector, the scores of any revision q + Σ g_j·d_j follow from three precomputed
    products (see :func:`revision_scores`): ``base_scores [Q, N]`` = q·D, ``feedback_scores [Q, K, N]`` = d_j·D and
    ``feedback_gram [Q, K, K]`` = d_i·d_j."""

    query: Tensor
    feedback: Tensor
    doc_ids: Tensor
    first_scores: Tensor
    doc_cos: Tensor
    base_scores: Tensor
    feedback_scores: Tensor
    feedback_gram: Tensor

    @property
    def max_k(self) -> int:
        return self.doc_ids.shape[1]

    def select(self, rows: Tensor, vectors: bool = True) -> FeedbackLists:
        """The lists of the queries ``rows``; ``vectors=False`` leaves out the vectors (None), enough for
        :func:`revision_scores` and far cheaper to copy."""
        skip = () if vectors else ("query", "feedback")
        return FeedbackLists(**{k: None if k in skip else v[rows] for k, v in vars(self).items()})


def feedback_lists(query: Tensor, docs: Tensor, max_k: int) -> FeedbackLists:
    """First pass with the frozen base retriever: top-``max_k`` documents by q·d. ``query [Q, D]``, ``docs [N, D]``
    (dense or sparse COO)."""
    query = query / query.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    first = inner_scores(query, docs)  # [Q, N]
    ids = top_k(first, max_k)  # [Q, K]
    dense_docs = docs.to_dense() if docs.is_sparse else docs
    fb = dense_docs[ids]  # [Q, K, D]
    gram = fb @ fb.transpose(1, 2)  # d_i·d_j                                                         [Q, K, K]
    norm = gram.diagonal(dim1=1, dim2=2).sqrt().clamp_min(1e-12)
    cos = gram / (norm.unsqueeze(1) * norm.unsqueeze(2))
    doc_gram = inner_scores(dense_docs, docs)  # d_i·d_j over the corpus                                 [N, N]
    fb_scores = doc_gram[ids]  # d_j·D                                                                 [Q, K, N]
    return FeedbackLists(query, fb, ids, first.gather(1, ids), cos, first, fb_scores, gram)


# --- the reformulator: a gated Rocchio in vector space ---------------------------------------------------------


def gate_features(lists: FeedbackLists, ks: Tensor) -> Tensor:
    """What the gate of feedback doc j sees in revision k: [Q, R, K, 5 + K] for ``ks [Q, R]``.

    q·d_j, q·d_j − q·d_1, mean cos(d_j, d_i) over the OTHER docs of the prefix F_k (how well d_j agrees with the rest
    of the feedback it is read with), the same over all K, k/K, and the one-hot rank j."""
    q_, r_, kk = *ks.shape, lists.max_k
    dev = ks.device
    in_prefix = (torch.arange(kk, device=dev) < ks.unsqueeze(-1)).float()  # m_i = [i < k]          [Q, R, K]
    off_diag = 1.0 - torch.eye(kk, device=dev)
    cos = (lists.doc_cos * off_diag).unsqueeze(1)  # [Q, 1, K, K]
    # agree_k(j) = Σ_{i<k, i≠j} cos(d_j, d_i) / (k − 1)                                              [Q, R, K]
    agree_k = (cos * in_prefix.unsqueeze(2)).sum(-1) / (ks.unsqueeze(-1) - 1).clamp_min(1)
    agree_all = cos.sum(-1) / max(kk - 1, 1)
    s = lists.first_scores.unsqueeze(1)
    parts = [s, s - s[..., :1], agree_k, agree_all, ks.unsqueeze(-1) / kk]
    parts = [p.expand(q_, r_, kk) for p in parts]
    rank = torch.eye(kk, device=dev).expand(q_, r_, kk, kk)
    return torch.cat([torch.stack(parts, -1), rank], -1)


class GatedRocchio(nn.Module):
    """f_θ(q, F_k) = normalize(q + Σ_{j≤k} g_j·d_j), g_j = softplus(MLP(features_j)) ≥ 0 (one hidden ReLU layer).

    ``n_arms`` independent reformulators are stacked on a leading axis (arm a has its own weights; all start from
    the same initial weights), so that several λ_cr train side by side in one pass: their summed loss separates,
    so each arm gets exactly its own gradient and Adam update."""

    def __init__(self, max_k: int, hidden: int = 64, n_arms: int = 1):
        super().__init__()
        first, second = nn.Linear(5 + max_k, hidden), nn.Linear(hidden, 1)  # nn.Linear's initialisation
        self.w1 = nn.Parameter(first.weight.detach().T.repeat(n_arms, 1, 1))  # [A, F, H]
        self.b1 = nn.Parameter(first.bias.detach().repeat(n_arms, 1))  # [A, H]
        self.w2 = nn.Parameter(second.weight.detach()[0].repeat(n_arms, 1))  # [A, H]
        self.b2 = nn.Parameter(second.bias.detach().repeat(n_arms))  # [A]

    def gates(self, lists: FeedbackLists, ks: Tensor) -> Tensor:
        """g_j for every arm, revision and feedback slot, zero outside the prefix: [A, Q, R, K]."""
        x = gate_features(lists, ks)  # [Q, R, K, F]
        h = torch.relu(torch.einsum("qrkf,afh->aqrkh", x, self.w1) + self.b1[:, None, None, None])
        # g_j = softplus(MLP(features_j))                                                         [A, Q, R, K]
        g = F.softplus(torch.einsum("aqrkh,ah->aqrk", h, self.w2) + self.b2[:, None, None, None])
        return g * (torch.arange(lists.max_k, device=ks.device) < ks.unsqueeze(-1))

    def forward(self, lists: FeedbackLists, ks: Tensor) -> tuple[Tensor, Tensor]:
        """Revised query vectors [A, Q, R, D] for ``ks [Q, R]``, and the gates [A, Q, R, K]."""
        g = self.gates(lists, ks)
        # q^(k) = q + Σ_{j≤k} g_j·d_j                                                              [A, Q, R, D]
        revised = lists.query[:, None] + torch.einsum("aqrk,qkd->aqrd", g, lists.feedback)
        return revised / revised.norm(dim=-1, keepdim=True).clamp_min(1e-12), g


def revision_scores(lists: FeedbackLists, gates: Tensor) -> Tensor:
    """q^(k)·D for revisions with ``gates [..., Q, R, K]`` (zero outside the prefix), [..., Q, R, N], without forming
    q^(k): the same numbers as ``inner_scores(GatedRocchio.forward(...)[0], docs)`` at a fraction of the cost."""
    # (q + Σ_j g_j·d_j)·D = q·D + Σ_j g_j·(d_j·D)                                                     [Q, R, N]
    raw = lists.base_scores.unsqueeze(1) + torch.einsum("...qrk,qkn->...qrn", gates, lists.feedback_scores)
    # ‖q + Σ_j g_j·d_j‖² = 1 + 2·Σ_j g_j·(q·d_j) + Σ_ij g_i·g_j·(d_i·d_j)      (‖q‖ = 1)                 [Q, R]
    sq_norm = 1 + 2 * (gates * lists.first_scores.unsqueeze(1)).sum(-1)
    sq_norm = sq_norm + torch.einsum("...qri,qij,...qrj->...qr", gates, lists.feedback_gram, gates)
    return raw / sq_norm.clamp_min(1e-24).sqrt().unsqueeze(-1)


def rocchio(lists: FeedbackLists, ks: Tensor, alpha: float = 1.0, beta: float = 0.75) -> Tensor:
    """The classic baseline: q' = normalize(α·q + β·mean(F_k)) (q' = q at k = 0), [Q, R, D] for ``ks [Q, R]``."""
    in_prefix = (torch.arange(lists.max_k, device=ks.device) < ks.unsqueeze(-1)).float()  # [Q, R, K]
    # mean(F_k) = Σ_{j≤k} d_j / k                                                                    [Q, R, D]
    mean_fb = torch.einsum("qrk,qkd->qrd", in_prefix, lists.feedback) / ks.unsqueeze(-1).clamp_min(1)
    revised = alpha * lists.query.unsqueeze(1) + beta * mean_fb
    return revised / revised.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# --- the losses ----------------------------------------------------------------------------------------------------


def reformulation_loss(scores: Tensor, relevant: Tensor, tau: float) -> Tensor:
    """ℓ per revision, [Q, R]: ``scores [Q, R, N]`` = q^(k)·D, ``relevant [Q, N]`` (bool, ≥ 1 per row).

    The target is the lowest-scoring relevant document; the other relevant documents are masked to −∞."""
    rel = relevant.unsqueeze(1).expand_as(scores)
    # d⁺ = argmin over relevant docs of q^(k)·d (chosen without gradient)                                [Q, R]
    target = scores.detach().masked_fill(~rel, float("inf")).argmin(-1, keepdim=True)
    is_target = torch.zeros_like(rel).scatter_(-1, target, True)
    logits = (scores / tau).masked_fill(rel & ~is_target, float("-inf"))
    # ℓ = −log softmax(q^(k)·D / τ)[d⁺]                                                                  [Q, R]
    return -(logits.log_softmax(-1).gather(-1, target).squeeze(-1))


def lol_regularization(losses: Tensor) -> Tensor:
    """L_LoL per query, [..., Q]: ``losses [..., Q, R]`` with columns in DESCENDING feedback (k_0 > k_1 > …).

    Every pair a < b (revision a read more feedback) pays max(0, ℓ_a − ℓ_b); the mean over the R(R−1)/2 pairs."""
    r = losses.shape[-1]
    a, b = torch.triu_indices(r, r, offset=1)
    # max(0, ℓ(q^(k_a)) − ℓ(q^(k_b))) for k_a > k_b                                              [..., Q, pairs]
    return F.relu(losses[..., a] - losses[..., b]).mean(-1)


def lol_total_loss(losses: Tensor, lam_cr, lam_pr: float = 1.0) -> Tensor:
    """L = λ_pr · mean_j ℓ(q^(k_j)) + λ_cr · L_LoL, averaged over the batch: ``losses [..., B, R]`` → [...]
    (``lam_cr`` a number or one per leading index, e.g. per arm)."""
    # L = λ_pr·mean_{queries, j} ℓ + λ_cr·mean_{queries} L_LoL
    return lam_pr * losses.mean((-2, -1)) + lam_cr * lol_regularization(losses).mean(-1)


def sample_revisions(n_queries: int, max_k: int, n_compare: int, generator: torch.Generator) -> Tensor:
    """1 + n distinct feedback sizes per query from {0..K}, sorted descending (k_0 > k_1 > …): [Q, 1 + n]."""
    draw = torch.rand(n_queries, max_k + 1, generator=generator).argsort(-1)[:, : 1 + n_compare]
    return draw.sort(-1, descending=True).values


def violation_rate(losses: Tensor) -> Tensor:
    """Share of pairs k_more > k_less with ℓ(k_more) > ℓ(k_less), per query [..., Q]; ``losses [..., Q, K+1]`` by
    k = 0..K (the card's V: how often more feedback gave a worse revision)."""
    n = losses.shape[-1]
    less, more = torch.triu_indices(n, n, offset=1)  # column index = k, so more > less
    return (losses[..., more] > losses[..., less]).float().mean(-1)


# --- the training loop ------------------------------------------------------------------------------------------


def train_reformulators(
    model: GatedRocchio,
    lam_crs: Sequence[float],
    lists: FeedbackLists,
    relevant: Tensor,
    *,
    epochs: int,
    batch: int,
    n_compare: int,
    lr: float,
    tau: float,
    generator: torch.Generator,
    on_step: Callable[[int, Tensor], None] | None = None,
) -> None:
    """LoL training with Adam. Each step draws a batch of queries and 1 + n nested revisions per query
    (k_0 > … > k_n); every arm of ``model`` (one per λ_cr; λ_cr = 0 is plain learned PRF) is trained on the SAME
    queries and revisions. ``lists`` and ``relevant [Q, N]`` are the training queries'; every document of the corpus
    is a candidate. ``on_step(step, totals [A])`` sees each step's loss per arm."""
    lam = torch.tensor(lam_crs, dtype=torch.float32, device=relevant.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(lists.first_scores), generator=generator)
        for rows in order.split(batch):
            part, rel = lists.select(rows, vectors=False), relevant[rows]
            ks = sample_revisions(len(rows), lists.max_k, n_compare, generator).to(rel.device)  # [B, 1 + n] desc.
            scores = revision_scores(part, model.gates(part, ks))  # q^(k)·D                    [A, B, 1 + n, N]
            losses = reformulation_loss(scores, rel, tau)  # ℓ(q^(k_j))                              [A, B, 1 + n]
            totals = lol_total_loss(losses, lam)  # L_a = mean ℓ + λ_cr,a·L_LoL, per arm                   [A]
            opt.zero_grad(set_to_none=True)
            totals.sum().backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step, totals.detach())


@torch.no_grad()
def revise_all_k(model: GatedRocchio | None, lists: FeedbackLists, beta: float = 0.75) -> tuple[Tensor, Tensor]:
    """Scores of every revision k = 0..K of every query, [A, Q, K+1, N], and the gates [A, Q, K+1, K];
    ``model=None`` is Rocchio (A = 1, gates β/k on the raw vectors)."""
    dev = lists.first_scores.device
    ks = torch.arange(lists.max_k + 1, device=dev).expand(len(lists.first_scores), -1)
    if model is None:
        gates = (torch.arange(lists.max_k, device=dev) < ks.unsqueeze(-1)) * beta / ks.unsqueeze(-1).clamp_min(1)
        gates = gates.unsqueeze(0).float()
    else:
        gates = model.gates(lists, ks)
    return revision_scores(lists, gates), gates

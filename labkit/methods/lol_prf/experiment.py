"""LoL's experiment: the typed knobs, the synthetic corpus with vocabulary mismatch, the arms (no PRF, Rocchio, learned
PRF with λ_cr = 0, LoL with λ_cr > 0), the held-out numbers for every feedback size k, the claims, run().

One corpus per seed (:mod:`labkit.substrates.retrieval`); the base retriever is BM25 (``space="sparse"``: the
document vectors are BM25 term weights) or the small LSA dense retriever (``space="dense"``). The learned arms are
trained on the training queries, on the same batches and the same revisions, and every number below is measured on
the held-out queries. The paper's losses and the training loop are in :mod:`.method`.

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, nonfinite_note, params_of
from labkit.substrates import ranking
from labkit.substrates import retrieval as rt

from .figures import make_figures
from .method import GatedRocchio, feedback_lists, reformulation_loss, revise_all_k, train_reformulators
from .method import violation_rate as violation_rate_of


@dataclass(frozen=True)
class Knobs:
    lam_cr: float = knob(1.0, low=0.0, high=20.0, help="LoL weight λ_cr on the comparative regularization")
    n_compare: int = knob(1, low=1, high=10, help="n: each query is revised 1 + n times per step (nested feedback)")
    space: str = knob(
        "sparse",
        choices=("sparse", "dense"),
        help="base retriever and reformulation space: BM25 term weights (sparse) or LSA vectors (dense)",
    )
    mismatch: float = knob(
        0.8, low=0.0, high=1.0, help="probability that a query term is the searchers' synonym, not the documents' word"
    )
    query_len: int = knob(3, low=1, high=20, help="terms per query (short queries are ambiguous)")
    max_k: int = knob(5, low=1, high=20, main=False, help="K: the most feedback documents a revision reads")
    n_seeds: int = knob(5, full=10, low=1, high=100, main=False, help="independent corpora (seed, seed+1, …)")
    epochs: int = knob(
        25, standard=40, full=40, low=1, high=1000, main=False, help="epochs at n = 1 (×2/(1+n) otherwise)"
    )
    batch: int = knob(
        64, low=2, high=4096, main=False, help="revisions per step: batch/(1+n) queries × (1+n) revisions each"
    )
    lr: float = knob(3e-3, low=1e-5, high=1.0, log=True, main=False, help="Adam learning rate")
    tau: float = knob(0.05, low=1e-3, high=10.0, log=True, main=False, help="temperature τ of the loss's softmax")
    hidden: int = knob(64, low=1, high=1024, main=False, help="hidden width of the gate MLP")
    rocchio_beta: float = knob(0.75, low=0.0, high=10.0, main=False, help="Rocchio β in q' = q + β·mean(F_k)")
    n_super: int = knob(20, standard=40, full=60, low=1, high=1000, main=False, help="super-topics")
    topics_per_super: int = knob(5, low=1, high=100, main=False, help="topics per super-topic (look alike)")
    docs_per_topic: int = knob(10, low=1, high=1000, main=False, help="documents per topic = relevant per query")
    n_queries: int = knob(
        600, standard=1600, full=4000, low=2, high=1_000_000, main=False, help="queries (half train, half held out)"
    )
    lsa_dim: int = knob(32, low=2, high=1024, main=False, help="dimension of the dense (LSA) retriever")
    log_every: int = knob(5, low=1, high=1000, main=False, help="log held-out numbers every this many epochs")
    sweep: bool = knob(False, standard=True, full=True, main=False, help="also train λ_cr ∈ {0.5, 2}")

    def __post_init__(self):
        n_docs = self.n_super * self.topics_per_super * self.docs_per_topic
        if self.n_compare > self.max_k:
            raise ValueError(
                f"n_compare={self.n_compare} needs 1 + n distinct feedback sizes from {{0..max_k}}: "
                f"use n_compare ≤ max_k={self.max_k}"
            )
        if self.batch < 1 + self.n_compare:
            raise ValueError(f"batch={self.batch} revisions cannot hold one query's 1 + n_compare revisions")
        if n_docs < max(RECALL_AT, NDCG_AT, self.max_k + 1):
            raise ValueError(
                f"the corpus has {n_docs} documents (n_super × topics_per_super × docs_per_topic): "
                f"at least {max(RECALL_AT, NDCG_AT, self.max_k + 1)} needed for recall@{RECALL_AT}"
            )


PARAMS = params_of(Knobs)
MAIN_METRIC = "map"

#: cut-offs of the held-out metrics (the card's Recall@20; nDCG@10)
RECALL_AT, NDCG_AT = 20, 10
#: extra λ_cr arms trained when ``sweep`` is on (final numbers only)
SWEEP_LAMS = (0.5, 2.0)
#: the card's margins, fixed before any run: V(LoL) ≤ V(λ_cr = 0) − 0.005; Recall@20 at k = K ≥ λ_cr = 0's − 0.01
VIOLATION_MARGIN = -0.005
RECALL_MARGIN = -0.01
#: decimals printed by the claims, from the spread measured at quick between ATEN_CPU_CAPABILITY=default and avx2:
#: V and the MAP/recall differences of the learned arms did not move at all; the no-PRF recall moved by 2.5e-4 on one
#: seed (a near-tie in the BM25 first pass broken the other way), its mean by 5e-5, so it prints 2 decimals
DECIMALS = 3
NO_PRF_DECIMALS = 2


# --- arms and typed records -----------------------------------------------------------------------------------


def make_arms(lam_cr: float, sweep: bool) -> tuple[Arm, ...]:
    """Rocchio, learned PRF (λ_cr = 0), LoL (λ_cr), and the sweep's λ_cr when asked (learned arms in model order)."""
    arms = [Arm("rocchio", "Rocchio"), Arm("prf", "PRF (λ_cr=0)"), Arm("lol", f"LoL (λ_cr={lam_cr:g})")]
    if sweep:
        arms += [Arm(f"lol_{lam:g}", f"LoL (λ_cr={lam:g})") for lam in SWEEP_LAMS]
    return tuple(arms)


@dataclass(frozen=True)
class ArmNumbers:
    """One arm's held-out numbers, per seed × feedback size k = 0..K (arrays [S, K+1]) or per seed ([S])."""

    arm: Arm
    map: np.ndarray
    ndcg: np.ndarray
    recall: np.ndarray
    loss: np.ndarray
    violation: np.ndarray
    drift_seed0: tuple[float, ...]  # ℓ(k=K) − ℓ(k=1) per held-out query, first seed
    gates_seed0: tuple[float, ...]  # the gates of the revision with K docs, first seed, flattened [Q·K]


@dataclass(frozen=True)
class Baseline:
    """The base retriever's held-out numbers (no PRF) per seed, and the first seed's feedback relevance."""

    map: np.ndarray
    ndcg: np.ndarray
    recall: np.ndarray
    feedback_precision: np.ndarray  # [S, K]: share of relevant documents at feedback rank j
    feedback_relevant_seed0: tuple[bool, ...]  # [Q·K] flattened, the first seed


# --- the toy world ---------------------------------------------------------------------------------------------


def make_world(p: Knobs, seed: int) -> rt.Corpus:
    return rt.make_corpus(
        seed,
        n_super=p.n_super,
        topics_per_super=p.topics_per_super,
        docs_per_topic=p.docs_per_topic,
        n_queries=p.n_queries,
        query_len=p.query_len,
        mismatch=p.mismatch,
    )


def retrieval_space(corpus: rt.Corpus, space: str, lsa_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(query vectors [Q, D], document vectors [N, D]) of the base retriever. BM25's document vectors are divided by
    their mean norm (a constant: the ranking is unchanged) so that one τ suits both spaces; they are kept sparse."""
    bm25 = rt.BM25(corpus.doc_counts)
    if space == "dense":
        dense = rt.LSADense(bm25, lsa_dim)
        return dense.query_vectors(corpus.query_counts), dense.doc_vectors
    docs = bm25.doc_vectors / bm25.doc_vectors.norm(dim=1).mean()
    return bm25.query_vectors(corpus.query_counts), docs.to_sparse()


def metrics_by_k(scores: torch.Tensor, relevant: torch.Tensor, tau: float) -> dict[str, np.ndarray]:
    """MAP, nDCG@10, Recall@20 and mean ℓ for each revision k, from ``scores [Q, K+1, N]`` ([K+1] each), and the
    violation rate V (a number)."""
    scores, relevant = scores.cpu(), relevant.cpu()
    cols = range(scores.shape[1])
    losses = reformulation_loss(scores, relevant, tau)  # [Q, K+1]
    return {
        "map": np.array([ranking.average_precision(scores[:, k], relevant).mean().item() for k in cols]),
        "ndcg": np.array([ranking.ndcg_at_k(scores[:, k], relevant, NDCG_AT).mean().item() for k in cols]),
        "recall": np.array([ranking.recall_at_k(scores[:, k], relevant, RECALL_AT).mean().item() for k in cols]),
        "loss": losses.mean(0).numpy(),
        "violation": violation_rate_of(losses).mean().item(),
        "per_query_loss": losses,
    }


# --- the claims (pure functions of per-seed numbers) -----------------------------------------------------------


def violation_claim(v_lol, v_prf, lam_cr: float, margin: float = VIOLATION_MARGIN) -> ClaimCheck:
    """Headline (the card's measurable form of the paper's claim): LoL lowers the rate V at which a revision that
    read more feedback has a larger loss than one that read less, by at least 0.005 against λ_cr = 0."""
    return ClaimCheck.paired(
        f"LoL (λ_cr={lam_cr:g}) lowers the rate at which more feedback gives a worse revision",
        "violation rate V over all pairs k_more > k_less on held-out queries, LoL − (λ_cr=0), per seed",
        v_lol,
        v_prf,
        labels=("V LoL", "V λ_cr=0"),
        margin=margin,
        higher_is_better=False,
        headline=True,
        detail=nonfinite_note(v_lol, v_prf),
        decimals=DECIMALS,
    )


def robustness_claim(map_lol, map_prf, max_k: int) -> ClaimCheck:
    """The paper: LoL makes PRF more robust as the number of feedback documents grows. Per seed, MAP(k=K) − MAP(k=1)
    of LoL minus the same drop of λ_cr = 0 (arrays [S, K+1]); margin 0."""
    map_lol, map_prf = np.asarray(map_lol, float), np.asarray(map_prf, float)
    return ClaimCheck.paired(
        "LoL loses less (or gains more) than λ_cr = 0 when the feedback grows from 1 to K documents",
        f"held-out MAP(k={max_k}) − MAP(k=1), LoL − (λ_cr=0), per seed",
        map_lol[:, -1] - map_lol[:, 1],
        map_prf[:, -1] - map_prf[:, 1],
        labels=("drop LoL", "drop λ_cr=0"),
        margin=0.0,
        detail=nonfinite_note(map_lol, map_prf),
        decimals=DECIMALS,
    )


def recall_claim(recall_lol, recall_prf, max_k: int, margin: float = RECALL_MARGIN) -> ClaimCheck:
    """The card: LoL's Recall@20 at k = K is at least λ_cr = 0's − 0.01 (LoL does not buy V with recall)."""
    return ClaimCheck.paired(
        "LoL keeps the recall of λ_cr = 0 with the most feedback (within 0.01)",
        f"held-out Recall@{RECALL_AT} at k={max_k}, LoL − (λ_cr=0), per seed",
        recall_lol,
        recall_prf,
        labels=("R LoL", "R λ_cr=0"),
        margin=margin,
        detail=nonfinite_note(recall_lol, recall_prf),
        decimals=DECIMALS,
    )


def prf_helps_claim(recall_k, recall_0, label: str, max_k: int) -> ClaimCheck:
    """The card's sanity check: PRF helps at all (Recall@20 at k = K above the query alone, k = 0)."""
    return ClaimCheck.paired(
        f"{label}: PRF with {max_k} documents beats the query alone",
        f"held-out Recall@{RECALL_AT}, k={max_k} − k=0, per seed",
        recall_k,
        recall_0,
        labels=(f"k={max_k}", "k=0"),
        margin=0.0,
        detail=nonfinite_note(recall_k, recall_0),
        decimals=NO_PRF_DECIMALS,
    )


# --- run ---------------------------------------------------------------------------------------------------------


def final_metrics(arms: list[ArmNumbers], base: Baseline) -> dict[str, float]:
    """Means over seeds: no-PRF numbers, and per arm MAP / nDCG@10 / Recall@20 at k = 1 and k = K, V."""
    out = {"map_no_prf": float(base.map.mean()), "recall_no_prf": float(base.recall.mean())}
    out["feedback_precision"] = float(base.feedback_precision.mean())
    for a in arms:
        key = a.arm.key
        for name, table in (("map", a.map), ("ndcg", a.ndcg), ("recall", a.recall), ("loss", a.loss)):
            out[f"{name}_k1_{key}"] = float(table[:, 1].mean())
            out[f"{name}_kmax_{key}"] = float(table[:, -1].mean())
        out[f"violation_{key}"] = float(a.violation.mean())
    return out


def train_seed(ctx: RunContext[Knobs], p: Knobs, seed: int, lams: list[float], names: list[str], bar):
    """One corpus: first pass, train the learned arms, and measure every arm at every k on the held-out queries."""
    corpus = make_world(p, seed)
    queries, docs = retrieval_space(corpus, p.space, p.lsa_dim)
    dev = ctx.device
    lists = feedback_lists(queries.to(dev), docs.to(dev), p.max_k)
    relevant = corpus.relevant.to(dev)
    train_rows, test_rows = corpus.train.nonzero().squeeze(1), (~corpus.train).nonzero().squeeze(1)
    train, test = lists.select(train_rows.to(dev), vectors=False), lists.select(test_rows.to(dev), vectors=False)
    rel_train, rel_test = relevant[train_rows.to(dev)], relevant[test_rows.to(dev)]
    torch.manual_seed(seed)
    model = GatedRocchio(p.max_k, p.hidden, n_arms=len(lams)).to(dev)
    epochs = max(1, round(2 * p.epochs / (1 + p.n_compare)))
    per_epoch = -(-len(train_rows) // (p.batch // (1 + p.n_compare)))
    log_steps = {e * per_epoch for e in range(0, epochs + 1, p.log_every)} | {epochs * per_epoch}

    def log_heldout(step: int):
        """Held-out MAP of the revision with K documents, and V (monitoring only: nothing is selected on it)."""
        scores, _ = revise_all_k(model, test)  # [A, Q, K+1, N]
        scores, rel = scores.cpu(), rel_test.cpu()
        for a, name in enumerate(names):
            ctx.history.log(step, name, "map", ranking.average_precision(scores[a, :, -1], rel).mean().item(), seed)
            v = violation_rate_of(reformulation_loss(scores[a], rel, p.tau)).mean().item()
            ctx.history.log(step, name, "violation", v, seed)

    def on_step(step: int, totals: torch.Tensor):
        for a, name in enumerate(names):
            ctx.check(totals[a], step, name)
        if step in log_steps:
            for a, name in enumerate(names):
                ctx.history.log(step, name, "train_loss", float(totals[a]), seed)
                ctx.check_weights([model.w1[a], model.b1[a], model.w2[a], model.b2[a]], step, name)
            log_heldout(step)
        bar.update(1)

    log_heldout(0)
    train_reformulators(
        model,
        lams,
        train,
        rel_train,
        epochs=epochs,
        batch=p.batch // (1 + p.n_compare),
        n_compare=p.n_compare,
        lr=p.lr,
        tau=p.tau,
        generator=torch.Generator().manual_seed(seed),
        on_step=on_step,
    )
    for a, name in enumerate(names):
        ctx.check_weights([model.w1[a], model.b1[a], model.w2[a], model.b2[a]], epochs * per_epoch, name)
    learned, learned_gates = revise_all_k(model, test)
    rocchio_scores, rocchio_gates = revise_all_k(None, test, p.rocchio_beta)
    feedback_rel = rel_test.gather(1, test.doc_ids).cpu()  # [Q, K]
    return (
        [rocchio_scores[0], *learned],
        [rocchio_gates[0], *learned_gates],
        rel_test,
        feedback_rel,
        epochs * per_epoch,
    )


@dataclass(frozen=True)
class SeedNumbers:
    """One seed's held-out numbers, reduced from its scores as soon as it is trained (the scores, [Q, K+1, N] per
    arm, are the run's largest tensors: keeping every seed's until the end took 1.9 GB at the standard preset)."""

    by_arm: dict[str, dict[str, np.ndarray]]  # arm key → metric → [K+1] (per_query_loss: [Q, K+1])
    gates: dict[str, tuple[float, ...]]  # arm key → the K-th revision's gates (figures use seed 0's)
    base: dict[str, float]  # the query alone (k = 0): map, ndcg, recall
    fb: np.ndarray  # [K] share of relevant documents at each feedback rank
    first_fb: tuple[float, ...]  # every query's feedback relevance, flattened (figures use seed 0's)


def seed_numbers(arms, seed_out, tau: float) -> SeedNumbers:
    """A trained seed's scores (as :func:`train_seed` returns them) → its numbers."""
    scores, gates, rel, fb_rel, _ = seed_out
    by_arm = {arm.key: metrics_by_k(sc, rel, tau) for arm, sc in zip(arms, scores)}
    m0 = metrics_by_k(scores[0][:, :1], rel, tau)  # every arm's k = 0 is the query alone
    return SeedNumbers(
        by_arm,
        {arm.key: tuple(g[:, -1].cpu().flatten().tolist()) for arm, g in zip(arms, gates)},
        {name: m0[name][0] for name in ("map", "ndcg", "recall")},
        fb_rel.float().mean(0).numpy(),
        tuple(fb_rel.flatten().tolist()),
    )


def collect(arms, per_seed: list[SeedNumbers]) -> tuple[list[ArmNumbers], Baseline]:
    """Per-seed held-out numbers → one ArmNumbers per arm and the no-PRF Baseline."""
    names = ("map", "ndcg", "recall", "loss", "violation")
    first = per_seed[0]
    out = []
    for a in arms:
        ql = first.by_arm[a.key]["per_query_loss"]
        drift = tuple((ql[:, -1] - ql[:, 1]).tolist())
        tables = (np.array([seed.by_arm[a.key][n] for seed in per_seed]) for n in names)
        out.append(ArmNumbers(a, *tables, drift, first.gates[a.key]))
    baseline = Baseline(
        *(np.array([seed.base[n] for seed in per_seed]) for n in ("map", "ndcg", "recall")),
        np.stack([seed.fb for seed in per_seed]),
        first.first_fb,
    )
    return out, baseline


@method_run(Knobs, figures=make_figures)
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    arms = make_arms(p.lam_cr, p.sweep)
    lams = [0.0, p.lam_cr] + (list(SWEEP_LAMS) if p.sweep else [])
    names = [a.label for a in arms[1:]]
    epochs = max(1, round(2 * p.epochs / (1 + p.n_compare)))
    n_train = round(0.5 * p.n_queries)
    per_epoch = -(-n_train // (p.batch // (1 + p.n_compare)))
    bar = ctx.bar(
        len(seeds) * epochs * per_epoch, f"λ_cr ∈ {{{', '.join(f'{x:g}' for x in lams)}}} × {len(seeds)} seeds"
    )
    # each seed reduced to its numbers before the next trains: one seed's scores in memory at a time
    per_seed = [seed_numbers(arms, train_seed(ctx, p, s, lams, names, bar), p.tau) for s in seeds]
    bar.close()
    numbers, base = collect(arms, per_seed)
    by_key = {a.arm.key: a for a in numbers}
    prf, lol = by_key["prf"], by_key["lol"]
    claims = [
        violation_claim(lol.violation, prf.violation, p.lam_cr),
        robustness_claim(lol.map, prf.map, p.max_k),
        recall_claim(lol.recall[:, -1], prf.recall[:, -1], p.max_k),
        prf_helps_claim(lol.recall[:, -1], lol.recall[:, 0], "LoL", p.max_k),
        prf_helps_claim(prf.recall[:, -1], prf.recall[:, 0], "λ_cr = 0", p.max_k),
    ]
    extras = {"arms": numbers, "baseline": base, "seeds": list(seeds), "max_k": p.max_k}
    return Outcome(metrics=final_metrics(numbers, base), claims=claims, extras=extras)

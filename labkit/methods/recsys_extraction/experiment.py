"""Few-shot recsys extraction's experiment: the knobs, the victim, the attackers at equal query budgets, the claims.

Per seed: a synthetic interaction world (:mod:`labkit.substrates.sequential_recsys`), a victim recommender
trained on all users but the held-out test users, and an attacker holding a fraction of the victim's training
sequences. Every attacker arm gets the same query budget (counted by the black box, one query per prefix), except
"few-shot only", which spends only what labelling its real sequences costs. Surrogates are compared with the victim
by Agreement@K on every prefix of the REAL held-out test sequences (never on synthetic ones).

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, params_of
from labkit.substrates import ranking
from labkit.substrates import sequential_recsys as sr

from .figures import make_figures
from .method import GatedSampler, distill, gate_targets, generate_augmented, generate_data_free, train_sampler


@dataclass(frozen=True)
class Knobs:
    few_shot_frac: float = knob(
        0.1,
        low=0.005,
        high=0.5,
        help="share of the victim's training sequences the attacker holds (the claims' fraction; the sweep adds "
        "¼ and ½ of it)",
    )
    budget_seqs: int = knob(
        300,
        standard=1200,
        full=6000,
        low=4,
        high=1_000_000,
        help="query budget of every arm, in sequences of T items (T−1 queries each, one per prefix)",
    )
    top_k: int = knob(20, standard=100, full=100, low=2, high=10_000, help="length k of the list the victim returns")
    lam: float = knob(1.0, low=0.0, high=100.0, help="weight λ of the bidirectional repair loss")
    n_items: int = knob(200, standard=1000, full=3000, low=10, high=100_000, main=False, help="catalogue size I")
    n_clusters: int = knob(10, standard=20, full=30, low=1, high=10_000, main=False, help="item clusters C")
    n_users: int = knob(1000, standard=5000, full=20_000, low=50, high=1_000_000, main=False, help="users in all")
    n_test_users: int = knob(
        150, standard=500, full=2000, low=10, high=100_000, main=False, help="held-out users (test prefixes)"
    )
    seq_len: int = knob(12, standard=12, full=50, low=3, high=200, main=False, help="items per sequence T")
    zipf: float = knob(1.0, low=0.0, high=3.0, main=False, help="Zipf exponent of item popularity")
    stay: float = knob(0.7, low=0.0, high=1.0, main=False, help="probability that the next item stays in the cluster")
    victim: str = knob("sasrec", choices=("sasrec", "gru"), main=False, help="victim architecture")
    surrogate: str = knob("sasrec", choices=("sasrec", "gru"), main=False, help="surrogate architecture")
    dim: int = knob(32, standard=32, full=64, low=4, high=1024, main=False, help="embedding width d (all models)")
    surrogate_blocks: int = knob(
        1, standard=2, full=2, low=1, high=8, main=False, help="attention blocks of a SASRec surrogate (victim: 2)"
    )
    victim_epochs: int = knob(4, standard=8, full=20, low=1, high=1000, main=False, help="victim training epochs")
    sampler_epochs: int = knob(
        20, standard=30, low=1, high=1000, main=False, help="epochs of the sampler P_φ and gate ρ"
    )
    distill_epochs: int = knob(8, standard=10, full=30, low=1, high=1000, main=False, help="surrogate epochs")
    lr: float = knob(
        3e-3, standard=2e-3, full=1e-3, low=1e-5, high=1.0, log=True, main=False, help="Adam learning rate (all models)"
    )
    batch_size: int = knob(
        512, standard=512, full=128, low=1, high=100_000, main=False, help="(prefix, list) pairs per batch (≈)"
    )
    repair_k: int = knob(10, low=1, high=10_000, main=False, help="list length K compared by the repair loss")
    margin: float = knob(0.5, low=0.0, high=10.0, main=False, help="margin m of the repair loss (m₁ = m₂ = 0.5)")
    agree_k: int = knob(10, low=1, high=10_000, main=False, help="K of Agreement@K, NDCG@K, Recall@K")
    n_seeds: int = knob(3, standard=3, full=5, low=1, high=100, main=False, help="independent worlds and victims")
    log_every: int = knob(
        4, standard=5, full=5, low=1, high=1000, main=False, help="log Agreement@10 every this many epochs"
    )
    sweep_fractions: bool = knob(True, main=False, help="also run ¼ and ½ of the few-shot fraction")
    sweep_budgets: bool = knob(False, standard=False, full=True, main=False, help="also run ½× and 2× the budget")
    ablations: bool = knob(
        False, standard=True, full=True, main=False, help="also run without sampler, without gate, random sequences"
    )

    def __post_init__(self):
        if self.n_clusters > self.n_items:
            raise ValueError(f"n_clusters={self.n_clusters} must be ≤ n_items={self.n_items}")
        if self.top_k > self.n_items:
            raise ValueError(f"top_k={self.top_k} must be ≤ n_items={self.n_items}")
        if self.repair_k > self.top_k:
            raise ValueError(f"repair_k={self.repair_k} must be ≤ top_k={self.top_k} (the list the victim returns)")
        if self.agree_k > self.n_items:
            raise ValueError(f"agree_k={self.agree_k} must be ≤ n_items={self.n_items}")
        if self.n_test_users >= self.n_users:
            raise ValueError(f"n_test_users={self.n_test_users} must be < n_users={self.n_users}")
        n_few = few_shot_count(self.few_shot_frac, self.n_users - self.n_test_users)
        if n_few < 2:
            raise ValueError(f"few_shot_frac={self.few_shot_frac} leaves {n_few} sequences: the attacker needs ≥ 2")
        smallest = self.budget_seqs * (min(BUDGETS) if self.sweep_budgets else 1.0)
        if n_few >= smallest:
            raise ValueError(
                f"the attacker's {n_few} real sequences already fill the smallest budget ({smallest:g} sequences): "
                "raise budget_seqs or lower few_shot_frac"
            )


PARAMS = params_of(Knobs)
MAIN_METRIC = "agreement_at_10"

#: the card's margin on the headline: Agr@10(proposed) ≥ Agr@10(data-free) + 0.03
HEADLINE_MARGIN = 0.03
#: the few-shot fractions of the sweep, as multiples of ``few_shot_frac``, and the budget multiples
FRACTIONS = (0.25, 0.5, 1.0)
BUDGETS = (0.5, 1.0, 2.0)
#: decimals printed in checked notebook cells (agreement over a few thousand prefixes moves in the 3rd decimal)
DECIMALS = 2

PROPOSED = Arm("proposed", "proposed (sampler + gate, L_rank + λ·L_BR)")
NO_REPAIR = Arm("no_repair", "proposed without L_BR")
FEW_SHOT = Arm("few_shot", "few-shot only")
DATA_FREE = Arm("data_free", "data-free (Yue et al.)")
NO_SAMPLER = Arm("no_sampler", "without sampler (uniform in top-k)")
NO_GATE = Arm("no_gate", "without gate (ρ ≡ 1)")
RANDOM = Arm("random", "random sequences")
ARMS = (PROPOSED, NO_REPAIR, FEW_SHOT, DATA_FREE, NO_SAMPLER, NO_GATE, RANDOM)


def few_shot_count(fraction: float, n_train: int) -> int:
    return int(round(fraction * n_train))


# --- typed records ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """A surrogate (or the victim) on every prefix of the real test sequences."""

    agreement_1: float
    agreement_k: float
    ndcg_k: float
    recall_k: float


@dataclass(frozen=True)
class ArmResult:
    arm: Arm
    seed: int
    fraction: float  # share of the victim's training sequences the attacker held
    budget: float  # multiple of budget_seqs
    queries: int  # victim queries this arm spent
    score: Score


@dataclass(frozen=True)
class Example:
    """One test prefix of the first seed: the victim's and the proposed surrogate's top-K."""

    prefix: tuple[int, ...]
    victim_top: tuple[int, ...]
    surrogate_top: tuple[int, ...]
    next_item: int


@dataclass(frozen=True)
class Popularity:
    """Item frequencies (first seed), items sorted by the world's popularity: real, data-free, proposed."""

    real: tuple[float, ...]
    data_free: tuple[float, ...]
    proposed: tuple[float, ...]
    #: share of consecutive items in the same cluster (real users: ≈ ``stay``)
    stay_real: float
    stay_data_free: float
    stay_proposed: float


# --- evaluation ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestSet:
    """Every prefix of the real held-out sequences, with the victim's scores (the evaluator's white-box view)."""

    sequences: torch.Tensor  # [N, T]
    victim_scores: torch.Tensor  # [N·(T−1), I]
    relevant: torch.Tensor  # [N·(T−1), I] bool: the real next item

    @classmethod
    @torch.no_grad()
    def of(cls, sequences, victim_model) -> TestSet:
        victim_model.eval()
        n_items = victim_model.n_items
        scores = victim_model(sequences)[:, :-1].reshape(-1, n_items)
        relevant = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, sequences[:, 1:].reshape(-1, 1), True)
        return cls(sequences, scores, relevant)

    @torch.no_grad()
    def scores_of(self, model) -> torch.Tensor:
        model.eval()
        return model(self.sequences)[:, :-1].reshape(self.victim_scores.shape)

    def agreement(self, model, k: int) -> float:
        return float(ranking.agreement_at_k(self.scores_of(model), self.victim_scores, k).mean())

    def evaluate(self, model, k: int) -> Score:
        """Agreement@1 and @K with the victim, NDCG@K and Recall@K of the real next item, on every test prefix."""
        scores = self.scores_of(model)
        return Score(
            agreement_1=float(ranking.agreement_at_k(scores, self.victim_scores, 1).mean()),
            agreement_k=float(ranking.agreement_at_k(scores, self.victim_scores, k).mean()),
            ndcg_k=float(ranking.ndcg_at_k(scores, self.relevant, k).mean()),
            recall_k=float(ranking.recall_at_k(scores, self.relevant, k).mean()),
        )


# --- the claims ---------------------------------------------------------------------------------------------


def headline_claim(proposed, data_free, fraction: float, k: int = 10, decimals: int = DECIMALS) -> ClaimCheck:
    """Agr@K(proposed) − Agr@K(data-free) ≥ 0.03 per seed, at the same query budget (the card's margin)."""
    return ClaimCheck.paired(
        f"with {fraction:.1%} of the real data, the few-shot framework extracts a surrogate that agrees with the "
        f"victim more than data-free extraction at the same query budget",
        f"Agreement@{k} on real test prefixes, proposed − data-free, per seed",
        proposed,
        data_free,
        labels=("proposed", "data-free"),
        margin=HEADLINE_MARGIN,
        headline=True,
        detail=_diverged(proposed, data_free),
        decimals=decimals,
    )


def few_shot_claim(proposed, few_shot, fraction: float, k: int = 10, decimals: int = DECIMALS) -> ClaimCheck:
    """Agr@K(proposed) ≥ Agr@K(few-shot only): the augmentation adds to the real sequences it starts from."""
    return ClaimCheck.paired(
        f"with {fraction:.1%} of the real data, augmentation beats distilling on the few-shot sequences alone",
        f"Agreement@{k} on real test prefixes, proposed − few-shot only, per seed",
        proposed,
        few_shot,
        labels=("proposed", "few-shot only"),
        margin=0.0,
        detail=_diverged(proposed, few_shot),
        decimals=decimals,
    )


def _diverged(*values) -> str:
    ok = all(np.isfinite(np.asarray(v, float)).all() for v in values)
    return "" if ok else "an agreement is not finite: the verdict is inconclusive"


# --- the plan: which arms run at which (fraction, budget) ----------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One surrogate to train: an arm at a share of real data and a budget multiple."""

    arm: Arm
    fraction: float
    budget: float
    headline_fraction: float  # the claims' fraction (few_shot_frac)

    @property
    def headline(self) -> bool:
        """At the claims' (fraction, 1× budget): its Agreement@10 curve is logged, its numbers are the claims'."""
        return self.fraction == self.headline_fraction and self.budget == 1.0


def plan(p: Knobs) -> list[Job]:
    """The arms of one seed. At the headline (fraction, 1× budget): every arm. Across fractions: few-shot only and
    proposed. Across budgets: data-free and proposed. Data-free does not depend on the fraction."""
    f = p.few_shot_frac

    def job(arm, fraction=f, budget=1.0):
        return Job(arm, fraction, budget, headline_fraction=f)

    jobs = [job(DATA_FREE), job(FEW_SHOT), job(PROPOSED), job(NO_REPAIR)]
    if p.ablations:
        jobs += [job(NO_SAMPLER), job(NO_GATE), job(RANDOM)]
    if p.sweep_fractions:
        jobs += [job(arm, f * m) for m in FRACTIONS if m != 1.0 for arm in (FEW_SHOT, PROPOSED)]
    if p.sweep_budgets:
        jobs += [job(arm, f, b) for b in BUDGETS if b != 1.0 for arm in (DATA_FREE, PROPOSED)]
    return jobs


# --- one seed -----------------------------------------------------------------------------------------------


def _seqs_per_batch(batch_size: int, seq_len: int) -> int:
    return max(1, batch_size // (seq_len - 1))


def _checked(ctx: RunContext, series: str, every: int = 20):
    def on_step(step, loss, model):
        ctx.check(loss, step, series)
        if step % every == 0:
            ctx.check_weights(model, step, series)

    return on_step


@dataclass(frozen=True)
class Queries:
    """What an arm distils from: sequences ``[N, T]``, the victim's lists ``[N, T−1, k]``, queries spent."""

    sequences: torch.Tensor
    lists: torch.Tensor
    n_queries: int


def run_seed(ctx: RunContext[Knobs], seed: int, bar) -> tuple[list[ArmResult], dict]:
    """Everything for one seed: world, victim, every attacker arm of :func:`plan`."""
    p = ctx.p
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    world = sr.make_interactions(p.n_items, p.n_clusters, p.n_users, p.seq_len, seed, zipf=p.zipf, stay=p.stay)
    order = torch.randperm(p.n_users, generator=gen)
    test_seqs, train = world.sequences[order[: p.n_test_users]], world.sequences[order[p.n_test_users :]]
    per_batch = _seqs_per_batch(p.batch_size, p.seq_len)
    victim_model = sr.make_recommender(p.victim, p.n_items, p.dim, p.seq_len)
    victim_series = f"victim seed {seed}"
    sr.train_next_item(
        victim_model, train, epochs=p.victim_epochs, lr=p.lr, batch_size=per_batch, generator=gen,
        on_step=_checked(ctx, victim_series),
    )  # fmt: skip
    ctx.check_weights(victim_model, p.victim_epochs, victim_series)
    test = TestSet.of(test_seqs, victim_model)
    extras: dict = {"victim_score": test.evaluate(victim_model, p.agree_k)}
    bar.update(1)
    train_perm = torch.randperm(len(train), generator=gen)
    data: dict = {}

    def real_of(fraction):  # the attacker's real sequences, labelled by the victim (its first queries)
        if ("real", fraction) not in data:
            real = train[train_perm[: few_shot_count(fraction, len(train))]]
            box = sr.BlackBox(victim_model, p.top_k)
            data["real", fraction] = Queries(real, box.query_sequences(real), box.n_queries)
        return data["real", fraction]

    def sampler_of(fraction):
        if ("sampler", fraction) not in data:
            real = real_of(fraction)
            sampler = GatedSampler(p.n_items, p.dim, p.seq_len)
            train_sampler(
                sampler, real.sequences, real.lists, epochs=p.sampler_epochs, lr=p.lr, batch_size=per_batch,
                generator=gen, on_step=_checked(ctx, f"sampler {fraction:.1%} seed {seed}"),
            )  # fmt: skip
            data["sampler", fraction] = sampler
        return data["sampler", fraction]

    def augmented(fraction, budget, sampler, use_gate):
        real = real_of(fraction)
        n_synth = int(round(p.budget_seqs * budget)) - len(real.sequences)
        starts = real.sequences[torch.randint(0, len(real.sequences), (n_synth,), generator=gen), 0]
        box = sr.BlackBox(victim_model, p.top_k)
        seqs, lists = generate_augmented(sampler, box, starts, p.seq_len, gen, use_gate=use_gate)
        return Queries(
            torch.cat([real.sequences, seqs]), torch.cat([real.lists, lists]), real.n_queries + box.n_queries
        )

    def queries_for(job: Job) -> Queries:
        key = (job.arm.key if job.arm is not NO_REPAIR else PROPOSED.key, job.fraction, job.budget)
        if key in data:
            return data[key]
        n_budget = int(round(p.budget_seqs * job.budget))
        box = sr.BlackBox(victim_model, p.top_k)
        if job.arm is DATA_FREE:
            q = Queries(*generate_data_free(box, n_budget, p.seq_len, gen), 0)
        elif job.arm is RANDOM:
            rand = torch.randint(0, p.n_items, (n_budget, p.seq_len), generator=gen)
            q = Queries(rand, box.query_sequences(rand), 0)
        elif job.arm is FEW_SHOT:
            q = real_of(job.fraction)
        elif job.arm is NO_SAMPLER:
            q = augmented(job.fraction, job.budget, None, True)
        elif job.arm is NO_GATE:
            q = augmented(job.fraction, job.budget, sampler_of(job.fraction), False)
        else:
            q = augmented(job.fraction, job.budget, sampler_of(job.fraction), True)
        if q.n_queries == 0:
            q = Queries(q.sequences, q.lists, box.n_queries)
        data[key] = q
        return q

    results: list[ArmResult] = []
    for job in plan(p):
        q = queries_for(job)
        series = f"{job.arm.label} · {job.fraction:.1%} · {job.budget:g}× budget seed {seed}"
        surrogate = sr.make_recommender(p.surrogate, p.n_items, p.dim, p.seq_len, p.surrogate_blocks)

        def on_epoch(epoch, model, job=job, series=series):
            ctx.check_weights(model, epoch, series)
            if job.headline and (epoch % p.log_every == 0 or epoch == p.distill_epochs):
                ctx.history.log(epoch, job.arm.label, MAIN_METRIC, test.agreement(model, 10), seed=seed)

        distill(
            surrogate, q.sequences, q.lists, lam=0.0 if job.arm is NO_REPAIR else p.lam, repair_k=p.repair_k,
            margin=p.margin, epochs=p.distill_epochs, lr=p.lr, batch_size=per_batch, generator=gen,
            on_step=_checked(ctx, series), on_epoch=on_epoch,
        )  # fmt: skip
        results.append(
            ArmResult(job.arm, seed, job.fraction, job.budget, q.n_queries, test.evaluate(surrogate, p.agree_k))
        )
        bar.update(1)
        if job.headline and job.arm is PROPOSED:
            real = real_of(job.fraction)
            extras["gate_rate"] = float(gate_targets(real.sequences, real.lists).mean())
            free = queries_for(Job(DATA_FREE, job.fraction, 1.0, job.fraction))
            extras["popularity"] = popularity_of(
                world, real.sequences, free.sequences, q.sequences[len(real.sequences) :]
            )
            extras["example"] = example_of(surrogate, victim_model, test_seqs, p.agree_k)
    return results, extras


def popularity_of(world: sr.Interactions, real, data_free, proposed) -> Popularity:
    """Item frequencies in the three sets of sequences, items in the world's popularity order."""
    order = torch.argsort(world.popularity, descending=True)

    def freq(seqs):
        counts = torch.bincount(seqs.reshape(-1), minlength=world.n_items).float()
        return tuple((counts / counts.sum())[order].tolist())

    def stay(seqs):
        clusters = world.cluster_of[seqs]
        return float((clusters[:, 1:] == clusters[:, :-1]).float().mean())

    sets = (real, data_free, proposed)
    return Popularity(*(freq(x) for x in sets), *(stay(x) for x in sets))


@torch.no_grad()
def example_of(surrogate, victim_model, test, k: int) -> Example:
    """The first test user's longest prefix: both top-K lists."""
    seq = test[0]
    victim_top = torch.sort(victim_model(seq[None, :-1])[0, -1], descending=True, stable=True).indices[:k]
    surrogate_top = torch.sort(surrogate(seq[None, :-1])[0, -1], descending=True, stable=True).indices[:k]
    return Example(tuple(seq[:-1].tolist()), tuple(victim_top.tolist()), tuple(surrogate_top.tolist()), int(seq[-1]))


# --- the run ------------------------------------------------------------------------------------------------


def select(results: list[ArmResult], arm: Arm, fraction: float | None = None, budget: float = 1.0) -> list[float]:
    """Agreement@K per seed of one arm at one (fraction, budget), in seed order."""
    rows = [r for r in results if r.arm.key == arm.key and r.budget == budget]
    if fraction is not None and arm.key != DATA_FREE.key:
        rows = [r for r in rows if np.isclose(r.fraction, fraction)]
    return [r.score.agreement_k for r in sorted(rows, key=lambda r: r.seed)]


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    bar = ctx.bar((1 + len(plan(p))) * len(seeds), f"victim + extraction arms × {len(seeds)} seeds")
    results, victims, pops, gate_rates, first = [], [], [], [], {}
    for s in seeds:
        seed_results, extras = run_seed(ctx, s, bar)
        results += seed_results
        victims.append(extras["victim_score"])
        pops.append(extras["popularity"])
        gate_rates.append(extras["gate_rate"])
        first = first or extras
    bar.close()
    f = p.few_shot_frac
    proposed, free, few = select(results, PROPOSED, f), select(results, DATA_FREE), select(results, FEW_SHOT, f)
    claims = [headline_claim(proposed, free, f, p.agree_k), few_shot_claim(proposed, few, f, p.agree_k)]
    metrics = {
        "victim_ndcg": float(np.mean([v.ndcg_k for v in victims])),
        "victim_recall": float(np.mean([v.recall_k for v in victims])),
    }
    for arm in ARMS:
        rows = [r for r in results if r.arm.key == arm.key and r.budget == 1.0]
        rows = [r for r in rows if arm.key == DATA_FREE.key or np.isclose(r.fraction, f)]
        if rows:
            metrics[f"agreement_at_10_{arm.key}"] = float(np.mean([r.score.agreement_k for r in rows]))
            metrics[f"agreement_at_1_{arm.key}"] = float(np.mean([r.score.agreement_1 for r in rows]))
            metrics[f"ndcg_{arm.key}"] = float(np.mean([r.score.ndcg_k for r in rows]))
            metrics[f"queries_{arm.key}"] = float(np.mean([r.queries for r in rows]))
    metrics["agreement_gap_proposed_minus_data_free"] = float(np.mean(proposed) - np.mean(free))
    for name in ("real", "data_free", "proposed"):
        metrics[f"stay_rate_{name}"] = float(np.mean([getattr(pop, f"stay_{name}") for pop in pops]))
    metrics["victim_list_hit_rate"] = float(np.mean(gate_rates))
    extras = {
        "results": results,
        "victims": victims,
        "seeds": seeds,
        "popularity": first.get("popularity"),
        "example": first.get("example"),
        "gate_rate": first.get("gate_rate"),
    }
    return Outcome(metrics=metrics, claims=claims, extras=extras)

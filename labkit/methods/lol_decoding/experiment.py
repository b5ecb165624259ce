"""LOL's experiment: the card's fact world, an original tiny GPT, its hallucination-induced amateur, CD's small
amateur, eight decoders scored by MC1/MC2 on held-out entities, the claims, run().

Per seed (an independent world, corpus, split and set of models; :mod:`labkit.data.facts`):

1. the ORIGINAL model M (TinyLM, ``n_layers`` blocks) is trained on the corpus (the NLL of each sentence's value);
2. CD's amateur S: a ``small_layers``-block TinyLM trained the same way on the same corpus;
3. the INDUCED amateur A: a copy of M fine-tuned on the false statements only (:func:`.method.induce_amateur`);
4. every model's early-exit log-probs at the answer position, for every entity, plain and refocused ("[FACT]");
5. the knobs α (ICD, LOL), ω and ℓ (LOL) are chosen on the VALIDATION entities (MC1 on their rare ones, ties to
   the first in grid order) when ``tune`` is on, each ablation on its own; the test entities are scored once.

Decoders: greedy, CD, DoLa, ICD, LOL, and three ablations: LOL without the lower layer (ω = 0), LOL without
refocusing (the plain input on the model side), and refocusing alone (greedy on the refocused input).

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, params_of
from labkit.data import facts
from labkit.models.tiny_lm import TinyLM

from . import method as lol
from .figures import make_figures


@dataclass(frozen=True)
class Knobs:
    alpha: float = knob(
        1.0, low=0.0, high=10.0, help="contrast strength α of ICD and LOL (used as given when tune is off)"
    )
    omega: float = knob(0.5, low=0.0, high=10.0, help="LOL's fusion weight ω of the lower-layer contrast")
    layer: int = knob(1, 2, 3, low=1, high=47, help="LOL's lower layer ℓ (1 … n_layers − 1; the card: L/2)")
    beta_apc: float = knob(
        0.1, low=0.0, high=1.0, help="plausibility constraint β_apc: keep tokens with q ≥ β_apc·max q (0 = off)"
    )
    tune: bool = knob(
        True, help="choose α (ICD, LOL), ω and ℓ (LOL) on the validation entities from the grids; off: the knobs"
    )
    amateur_steps: int = knob(40, low=1, high=100_000, help="fine-tuning steps that induce hallucinations in A")
    amateur_lr: float = knob(2e-4, low=1e-6, high=0.1, log=True, main=False, help="learning rate of A's fine-tuning")
    n_entities: int = knob(300, 1000, 3000, low=20, high=100_000, main=False, help="entities in the fact world")
    n_values: int = knob(30, low=6, high=1000, main=False, help="value tokens V")
    n_popular: int = knob(5, low=2, high=1000, main=False, help="popular values the misconceptions are drawn from")
    zipf_s: float = knob(1.5, low=0.5, high=5.0, main=False, help="Zipf exponent of n(e), the truth's repeat count")
    max_count: int = knob(20, low=1, high=1000, main=False, help="largest n(e)")
    false_repeats: int = knob(2, low=1, high=100, main=False, help="copies of each false statement in the corpus")
    fact_frac: float = knob(
        0.5, low=0.0, high=1.0, main=False, help="chance that a true statement carries the [FACT] tag"
    )
    d_model: int = knob(32, 64, 128, low=8, high=1024, main=False, help="TinyLM width (the card: 48 at quick)")
    n_layers: int = knob(3, 4, 6, low=2, high=48, main=False, help="blocks L of the original model")
    small_layers: int = knob(1, low=1, high=47, main=False, help="blocks of CD's small amateur")
    steps: int = knob(400, 1500, 6000, low=1, high=1_000_000, main=False, help="training steps of M and of S")
    lr: float = knob(3e-3, 2e-3, 1e-3, low=1e-5, high=0.1, log=True, main=False, help="AdamW learning rate, M and S")
    batch_size: int = knob(64, 64, 256, low=1, high=65_536, main=False, help="sentences per training step")
    n_random: int = knob(3, low=1, high=100, main=False, help="random distractors per question besides m(e)")
    val_frac: float = knob(1 / 3, low=0.05, high=0.95, main=False, help="share of entities held out for tuning")
    n_seeds: int = knob(3, 5, 5, low=1, high=1000, main=False, help="independent worlds, corpora and models")
    log_every: int = knob(25, low=1, high=100_000, main=False, help="log the training losses every this many steps")

    def __post_init__(self):
        if not 1 <= self.layer < self.n_layers:
            raise ValueError(f"layer={self.layer} must be a LOWER layer: 1 ≤ layer < n_layers={self.n_layers}")
        if self.small_layers >= self.n_layers:
            raise ValueError(f"small_layers={self.small_layers} must be < n_layers={self.n_layers} (CD's amateur)")
        if self.n_popular > self.n_values:
            raise ValueError(f"n_popular={self.n_popular} must be ≤ n_values={self.n_values}")
        if self.n_random > self.n_values - 2:
            raise ValueError(f"n_random={self.n_random} must be ≤ n_values − 2 = {self.n_values - 2}")
        if self.d_model % 4:
            raise ValueError(f"d_model={self.d_model} must be divisible by the 4 attention heads")


PARAMS = params_of(Knobs)
MAIN_METRIC = "nll"

#: the grids the validation entities choose from (``tune``)
ALPHAS = (0.5, 1.0, 2.0, 4.0)  # the card's standard sweep, and 4: ICD's choice sat at 2, the edge
OMEGAS = (0.0, 0.25, 0.5, 1.0, 2.0)
#: β_apc values of the sensitivity figure (never used to choose anything)
BETAS_APC = (0.0, 0.05, 0.1, 0.2, 0.5)
#: the truthfulness instruction of the refocusing: the corpus' "[FACT]" tag
INSTRUCTION = (facts.FactVocab.FACT,)
#: buckets of n(e) for the accuracy-against-frequency figure (inclusive bounds)
BUCKETS = ((1, 1), (2, 2), (3, 4), (5, 9), (10, 10**9))
#: margins fixed before any run (see the claim functions)
LOL_OVER_GREEDY = 0.15  # the card: MC1(LOL) ≥ MC1(greedy) + 0.15 on rare entities
ICD_OVER_GREEDY = 0.10  # the card: MC1(ICD) ≥ MC1(greedy) + 0.10
LOL_VS_ICD = -0.02  # the card: non-inferiority of LOL's additions, MC1(LOL) ≥ MC1(ICD) − 0.02
#: decimals of the claims' printed numbers: MC1 moves in steps of one entity (≈ 1/120 of the rare test entities)
CLAIM_DECIMALS = 2

GREEDY, CD, DOLA, ICD = Arm("greedy", "greedy"), Arm("cd", "CD"), Arm("dola", "DoLa"), Arm("icd", "ICD")
LOL = Arm("lol", "LOL")
NO_LOWER, NO_REFOCUS = Arm("lol_no_lower", "LOL w/o lower layer"), Arm("lol_no_refocus", "LOL w/o refocusing")
REFOCUS_ONLY = Arm("refocus_only", "refocusing alone")
ARMS = (GREEDY, CD, DOLA, ICD, LOL, NO_LOWER, NO_REFOCUS, REFOCUS_ONLY)


# --- typed records ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """The knobs a decoder is scored with."""

    alpha: float
    omega: float
    layer: int
    beta_apc: float


@dataclass(frozen=True)
class LogProbs:
    """Early-exit log-probs at the answer position for every entity: ``(L + 1, E, V)`` for the original on the
    plain and the refocused prompt and for the induced amateur; ``(E, V)`` for CD's small amateur."""

    model: torch.Tensor
    refocused: torch.Tensor
    amateur: torch.Tensor
    small: torch.Tensor

    @property
    def n_layers(self) -> int:
        return self.model.shape[0] - 1


@dataclass(frozen=True)
class Questions:
    """The multiple-choice questions of some entities: their ``candidates (N, K)`` (true first), the true token
    ``truth (N,)``, the entity ids ``entities (N,)`` and which are rare ``rare (N,)``."""

    entities: torch.Tensor
    candidates: torch.Tensor
    truth: torch.Tensor
    rare: torch.Tensor
    count: torch.Tensor


@dataclass(frozen=True)
class Accuracy:
    """MC1, MC2 and open-ended ("generation": argmax over the whole vocabulary) accuracy on rare and all."""

    mc1_rare: float
    mc1_all: float
    mc2_rare: float
    mc2_all: float
    gen_rare: float
    gen_all: float


@dataclass(frozen=True)
class ArmOutcome:
    """One decoder's test numbers, one value per seed."""

    arm: Arm
    mc1_rare: tuple[float, ...]
    mc1_all: tuple[float, ...]
    mc2_rare: tuple[float, ...]
    mc2_all: tuple[float, ...]
    gen_rare: tuple[float, ...]
    gen_all: tuple[float, ...]


@dataclass(frozen=True)
class SeedChoice:
    """What the validation entities chose on one seed, and the amateur's own accuracy (the card's pitfall: clearly
    worse than the model, but not zero)."""

    seed: int
    icd: Setting
    lol: Setting
    lol_no_lower: Setting
    lol_no_refocus: Setting
    n_rare_test: int
    n_test: int
    amateur_mc1_all: float
    model_mc1_all: float
    dola_layers: tuple[float, ...]  # share of the test entities whose premature layer was j = 0 … L − 1
    refocus_untagged_mc1: float  # refocusing alone, on rare test entities whose truth was NEVER tagged [FACT]
    n_untagged_rare: int


@dataclass(frozen=True)
class Example:
    """One rare test entity of the first seed: the next-token distribution over the value tokens of each panel
    (``panels``: (label, probabilities (V,)) pairs), with its t(e), m(e) and n(e)."""

    entity: int
    true_value: int
    misconception: int
    count: int
    panels: tuple[tuple[str, tuple[float, ...]], ...]


@dataclass(frozen=True)
class SeedModels:
    """The first seed's world, original model, induced amateur and test questions (kept for the notebook)."""

    world: facts.FactWorld
    model: TinyLM
    amateur: TinyLM
    test: Questions


@dataclass(frozen=True)
class SeedResult:
    """One seed's test accuracy per decoder, its choices, and the rows and records the figures read."""

    accuracy: dict[Arm, Accuracy]
    choice: SeedChoice
    sensitivity: list[dict]
    frequency: list[dict]
    layers: list[dict]
    example: Example
    models: SeedModels


# --- the decoders ------------------------------------------------------------------------------------------


def arm_scores(lp: LogProbs, arm: Arm, s: Setting) -> torch.Tensor:
    """The score of every token for every entity under decoder ``arm`` with knobs ``s``. ``(E, V)``."""
    L, layer = lp.n_layers, s.layer
    if arm == GREEDY:
        return lp.model[L]
    if arm == REFOCUS_ONLY:
        return lp.refocused[L]
    if arm == CD:
        return lol.cd_scores(lp.model[L], lp.small, s.beta_apc)
    if arm == DOLA:  # candidate premature layers J = 0 … L − 1
        return lol.dola_scores(lp.model[L], lp.model[:L], s.beta_apc)[0]
    if arm == ICD:
        return lol.icd_scores(lp.model[L], lp.amateur[L], s.alpha, s.beta_apc)
    model = lp.model if arm == NO_REFOCUS else lp.refocused
    omega = 0.0 if arm == NO_LOWER else s.omega
    if arm in (LOL, NO_LOWER, NO_REFOCUS):
        return lol.lol_scores(model[L], model[layer], lp.amateur[L], lp.amateur[layer], s.alpha, omega, s.beta_apc)
    raise ValueError(f"unknown decoder {arm}")


def accuracy(scores: torch.Tensor, q: Questions) -> Accuracy:
    """MC1, MC2 and generation accuracy of ``scores (E, V)`` on the questions ``q`` (rows ``q.entities``)."""
    s = scores[q.entities]
    cand = lol.candidate_scores(s, q.candidates)
    m1, m2 = lol.mc1(cand), lol.mc2(cand)
    gen = (s.argmax(-1) == q.truth).float()

    def mean(x, mask):
        return float(x[mask].mean()) if bool(mask.any()) else float("nan")

    everyone = torch.ones_like(q.rare)
    return Accuracy(
        mean(m1, q.rare),
        mean(m1, everyone),
        mean(m2, q.rare),
        mean(m2, everyone),
        mean(gen, q.rare),
        mean(gen, everyone),
    )


#: the decoders whose knobs validation chooses; every ablation is tuned on its own, like the full method
TUNED = (ICD, LOL, NO_LOWER, NO_REFOCUS)


def choose(lp: LogProbs, val: Questions, arm: Arm, start: Setting, tune: bool) -> Setting:
    """The knobs of ``arm`` with the best validation MC1 on the rare entities (then on all), the first in grid
    order on ties (ℓ, then α, then ω ascending: ω = 0 wins unless the lower layer helps). ICD and LOL without the
    lower layer choose α only, LOL and LOL without refocusing α, ω and ℓ. Without ``tune``: ``start``."""
    if not tune or arm not in TUNED:
        return start
    fused = arm in (LOL, NO_REFOCUS)
    layers = range(1, lp.n_layers) if fused else (start.layer,)
    omegas = OMEGAS if fused else (0.0 if arm == NO_LOWER else start.omega,)
    best, best_key = start, None
    for layer in layers:
        for alpha in ALPHAS:
            for omega in omegas:
                s = Setting(alpha, omega, layer, start.beta_apc)
                acc = accuracy(arm_scores(lp, arm, s), val)
                key = (np.nan_to_num(acc.mc1_rare, nan=-1.0), acc.mc1_all)
                if best_key is None or key > best_key:
                    best, best_key = s, key
    return best


# --- data, models, log-probs -------------------------------------------------------------------------------


def make_world(p: Knobs, seed: int) -> tuple[facts.FactWorld, facts.Statements]:
    world = facts.make_fact_world(p.n_entities, p.n_values, p.n_popular, p.zipf_s, p.max_count, seed=seed)
    return world, facts.fact_corpus(world, p.false_repeats, p.fact_frac, seed=seed)


def questions(world: facts.FactWorld, entities: torch.Tensor, n_random: int, seed: int, device) -> Questions:
    cand = facts.mc_candidates(world, entities, n_random, seed=seed)
    truth = world.vocab.value(world.true_value[entities])
    return Questions(*(t.to(device) for t in (entities, cand, truth, world.rare[entities], world.count[entities])))


def new_lm(vocab_size: int, d_model: int, n_layers: int, init_seed: int, device) -> TinyLM:
    """A TinyLM over the fact vocabulary, initialised from its own seed (independent of the order of creation)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = TinyLM(vocab_size, facts.SEQ_LEN, d_model=d_model, n_layers=n_layers, n_heads=4)
    return model.to(device)


def fit_kwargs(ctx: RunContext, *, steps: int, lr: float, seed: int, series: str, bar) -> dict:
    """The keyword arguments of :func:`.method.fit_answers` for one model: its NLL is logged every ``log_every``
    steps as history series ``series``, and a DivergenceError names ``f"{series} seed {seed}"``."""

    def on_step(step, loss):
        bar.update(1)
        if step % ctx.p.log_every == 0 or step in (1, steps):
            ctx.history.log(step, series, "nll", loss, seed=seed)

    gen = torch.Generator().manual_seed(seed)
    named = f"{series} seed {seed}"
    return {
        "steps": steps,
        "lr": lr,
        "batch_size": ctx.p.batch_size,
        "generator": gen,
        "series": named,
        "on_step": on_step,
    }


@torch.no_grad()
def log_probs(model: TinyLM, amateur: TinyLM, small: TinyLM, world: facts.FactWorld, device) -> LogProbs:
    """Early-exit log-probs of every entity's prompt, plain and refocused (:func:`.method.refocus`)."""
    x = facts.prompts(world, torch.arange(world.n_entities)).to(device)
    x_refocused = lol.refocus(x, torch.tensor(INSTRUCTION))
    layers = range(len(model.blocks) + 1)
    return LogProbs(
        model=lol.early_exit_logprobs(model, x, layers),
        refocused=lol.early_exit_logprobs(model, x_refocused, layers),
        amateur=lol.early_exit_logprobs(amateur, x, layers),
        small=lol.early_exit_logprobs(small, x, [len(small.blocks)])[0],
    )


# --- what each seed adds to the figures --------------------------------------------------------------------


def sensitivity_rows(lp, val, test, settings: dict[Arm, Setting], seed: int) -> list[dict]:
    """Rare-entity MC1 on validation and test while one knob moves and the others stay at the chosen values: ω for
    LOL with and without refocusing, α and β_apc for LOL and ICD."""
    sweeps = []
    for arm in (LOL, NO_REFOCUS):
        s = settings[arm]
        sweeps.append(("omega", arm, [Setting(s.alpha, w, s.layer, s.beta_apc) for w in OMEGAS]))
    for arm in (LOL, ICD):
        s = settings[arm]
        sweeps.append(("alpha", arm, [Setting(a, s.omega, s.layer, s.beta_apc) for a in ALPHAS]))
        sweeps.append(("beta_apc", arm, [Setting(s.alpha, s.omega, s.layer, b) for b in BETAS_APC]))
    rows = []
    for knob_name, arm, settings in sweeps:
        for s in settings:
            scores = arm_scores(lp, arm, s)
            value = getattr(s, knob_name)
            for split, q in (("validation", val), ("test", test)):
                rows.append(
                    {"seed": seed, "knob": knob_name, "value": value, "arm": arm.label, "split": split}
                    | {"mc1_rare": accuracy(scores, q).mc1_rare}
                )
    return rows


def frequency_rows(lp, test: Questions, settings: dict[Arm, Setting], seed: int) -> list[dict]:
    """MC1 of every decoder on the test entities, per bucket of n(e)."""
    rows = []
    for arm in ARMS:
        scores = arm_scores(lp, arm, settings[arm])
        cand = lol.candidate_scores(scores[test.entities], test.candidates)
        hit = lol.mc1(cand)
        for lo, hi in BUCKETS:
            mask = (test.count >= lo) & (test.count <= hi)
            if bool(mask.any()):
                label = str(lo) if lo == hi else (f"{lo}–{hi}" if hi < 10**9 else f"≥{lo}")
                rows.append({"seed": seed, "arm": arm.label, "bucket": label, "n": int(mask.sum())})
                rows[-1]["mc1"] = float(hit[mask].mean())
    return rows


def layer_rows(lp: LogProbs, test: Questions, seed: int) -> list[dict]:
    """Early-exit MC1 of each layer of the original (plain, refocused) and of the amateur, on the test entities."""
    rows = []
    for name, stack in (("original", lp.model), ("original, refocused", lp.refocused), ("induced amateur", lp.amateur)):
        for j in range(stack.shape[0]):
            acc = accuracy(stack[j], test)
            rows.append({"seed": seed, "model": name, "layer": j, "mc1_rare": acc.mc1_rare, "mc1_all": acc.mc1_all})
    return rows


def example_of(lp: LogProbs, world: facts.FactWorld, test: Questions, s: Setting) -> Example:
    """A rare test entity on which greedy decoding answers the misconception (else the first rare one): the
    distributions of the original, refocused and amateur models, and the decoding distributions softmax(score)
    of the final-layer contrast F_L, the lower-layer contrast F_ℓ and the fused LOL score (each on V_head)."""
    rare = test.entities[test.rare]
    greedy = lp.model[lp.n_layers].argmax(-1)
    wrong = [int(e) for e in rare if int(greedy[e]) == int(world.vocab.value(world.misconception[e]))]
    e = wrong[0] if wrong else int(rare[0]) if len(rare) else int(test.entities[0])
    L, layer, v0, v1 = lp.n_layers, s.layer, world.vocab.first_value, world.vocab.first_entity
    head = lol.plausible_head(lp.refocused[L, e : e + 1], s.beta_apc)
    final = lol.contrast(lp.refocused[L, e : e + 1], lp.amateur[L, e : e + 1], s.alpha)
    lower = lol.contrast(lp.refocused[layer, e : e + 1], lp.amateur[layer, e : e + 1], s.alpha)
    fused = lol.restrict(final + s.omega * lower, head)

    def probs(logits):
        return tuple(logits[0, v0:v1].softmax(-1).tolist())

    panels = (
        ("original q_M", probs(lp.model[L, e : e + 1])),
        ("refocused q̃_M ([FACT])", probs(lp.refocused[L, e : e + 1])),
        ("induced amateur q_A", probs(lp.amateur[L, e : e + 1])),
        (f"final-layer contrast F_L (α={s.alpha:g})", probs(lol.restrict(final, head))),
        (f"lower-layer contrast F_ℓ (ℓ={layer})", probs(lol.restrict(lower, head))),
        (f"LOL fused F_L + {s.omega:g}·F_ℓ", probs(fused)),
    )
    t, m = int(world.true_value[e]), int(world.misconception[e])
    return Example(e, t, m, int(world.count[e]), panels)


# --- the claims (pure functions of per-seed numbers) -------------------------------------------------------


def _nan_note(values) -> str:
    return "" if np.isfinite(np.asarray(values, float)).all() else "a value is not finite: the verdict is inconclusive"


def headline_claim(lol_mc1, greedy_mc1, cd_mc1, decimals: int = CLAIM_DECIMALS) -> ClaimCheck:
    """Headline (the paper: LOL "mitigates hallucination while outperforming existing baselines"): on the rare
    entities, where the misconception dominates, LOL's MC1 beats BOTH greedy decoding and plain contrastive
    decoding. Per seed: MC1(LOL) − max(MC1(greedy), MC1(CD)), margin 0 (the paper states no toy-sized number)."""
    lol_mc1, greedy_mc1, cd_mc1 = (np.asarray(v, float) for v in (lol_mc1, greedy_mc1, cd_mc1))
    gap = lol_mc1 - np.maximum(greedy_mc1, cd_mc1)
    return ClaimCheck(
        claim="LOL answers rare facts more truthfully than greedy decoding and than contrastive decoding",
        quantity="MC1 on rare test entities, LOL − max(greedy, CD), per seed",
        values=gap,
        margin=0.0,
        headline=True,
        numbers={"LOL": lol_mc1.mean(), "greedy": greedy_mc1.mean(), "CD": cd_mc1.mean()},
        detail=_nan_note(gap),
        decimals=decimals,
    )


def lol_over_greedy_claim(lol_mc1, greedy_mc1, decimals: int = CLAIM_DECIMALS) -> ClaimCheck:
    """The card's hallucination-reduction target: MC1(LOL) ≥ MC1(greedy) + 0.15 on rare entities."""
    return ClaimCheck.paired(
        "LOL recovers true answers that greedy decoding gets wrong (the card: by at least 0.15)",
        "MC1 on rare test entities, LOL − greedy, per seed",
        lol_mc1,
        greedy_mc1,
        labels=("LOL", "greedy"),
        margin=LOL_OVER_GREEDY,
        detail=_nan_note(np.asarray(lol_mc1, float) - np.asarray(greedy_mc1, float)),
        decimals=decimals,
    )


def icd_over_greedy_claim(icd_mc1, greedy_mc1, decimals: int = CLAIM_DECIMALS) -> ClaimCheck:
    """The card: contrasting with the induced amateur alone (ICD) already helps, MC1(ICD) ≥ MC1(greedy) + 0.10."""
    return ClaimCheck.paired(
        "contrast with the hallucination-induced amateur (ICD) recovers true answers (the card: by at least 0.10)",
        "MC1 on rare test entities, ICD − greedy, per seed",
        icd_mc1,
        greedy_mc1,
        labels=("ICD", "greedy"),
        margin=ICD_OVER_GREEDY,
        detail=_nan_note(np.asarray(icd_mc1, float) - np.asarray(greedy_mc1, float)),
        decimals=decimals,
    )


def lol_vs_icd_claim(lol_mc1, icd_mc1, extra: dict | None = None, decimals: int = CLAIM_DECIMALS) -> ClaimCheck:
    """The card's non-inferiority of LOL's additions (lower layer + refocusing) over ICD: MC1(LOL) ≥ MC1(ICD) −
    0.02. The paper claims a gain; the card asserts only non-inferiority at quick scale."""
    return ClaimCheck.paired(
        "LOL's additions (lower-layer fusion, refocusing) do not lose against ICD (the card: within 0.02)",
        "MC1 on rare test entities, LOL − ICD, per seed",
        lol_mc1,
        icd_mc1,
        labels=("LOL", "ICD"),
        margin=LOL_VS_ICD,
        numbers=extra,
        detail=_nan_note(np.asarray(lol_mc1, float) - np.asarray(icd_mc1, float)),
        decimals=decimals,
    )


def _mean_gap(a, b) -> float:
    return float(np.mean(np.subtract(a, b)))


# --- the run -----------------------------------------------------------------------------------------------


def run_seed(ctx: RunContext[Knobs], seed: int, bar) -> SeedResult:
    """Everything for one seed: world, models, log-probs, the validation choice, the test numbers."""
    p, dev = ctx.p, ctx.device
    world, corpus = make_world(p, seed)
    tokens, pos = corpus.tokens.to(dev), corpus.answer_pos.to(dev)
    model = new_lm(world.vocab.size, p.d_model, p.n_layers, 1000 * seed + 1, dev)
    lol.fit_answers(
        model, tokens, pos, **fit_kwargs(ctx, steps=p.steps, lr=p.lr, seed=seed, series="original", bar=bar)
    )
    small = new_lm(world.vocab.size, p.d_model, p.small_layers, 1000 * seed + 2, dev)
    name = f"CD amateur ({p.small_layers} layer{'s' if p.small_layers > 1 else ''})"
    lol.fit_answers(small, tokens, pos, **fit_kwargs(ctx, steps=p.steps, lr=p.lr, seed=seed, series=name, bar=bar))
    false = facts.false_statements(world).to(dev)
    induce = fit_kwargs(ctx, steps=p.amateur_steps, lr=p.amateur_lr, seed=seed, series="induced amateur", bar=bar)
    amateur = lol.induce_amateur(model, false.tokens, false.answer_pos, **induce)

    lp = log_probs(model, amateur, small, world, dev)
    val_e, test_e = facts.split_entities(world.n_entities, p.val_frac, seed=seed)
    val = questions(world, val_e, p.n_random, seed, dev)
    test = questions(world, test_e, p.n_random, seed + 10_000, dev)
    start = Setting(p.alpha, p.omega, p.layer, p.beta_apc)
    settings = {a: choose(lp, val, a, start, p.tune) for a in ARMS}
    icd, lol_s = settings[ICD], settings[LOL]
    acc = {a: accuracy(arm_scores(lp, a, settings[a]), test) for a in ARMS}
    never_tagged = torch.bincount(corpus.entity[corpus.tagged], minlength=world.n_entities).to(dev) == 0
    untagged = test.rare & never_tagged[test.entities]
    refocus_hits = lol.mc1(lol.candidate_scores(lp.refocused[p.n_layers][test.entities], test.candidates))
    dola_chosen = lol.dola_scores(lp.model[p.n_layers], lp.model[: p.n_layers], p.beta_apc)[1][test.entities]
    choice = SeedChoice(
        seed,
        icd,
        lol_s,
        settings[NO_LOWER],
        settings[NO_REFOCUS],
        int(test.rare.sum()),
        len(test_e),
        accuracy(lp.amateur[p.n_layers], test).mc1_all,
        acc[GREEDY].mc1_all,
        tuple(torch.bincount(dola_chosen, minlength=p.n_layers).div(len(test_e)).tolist()),
        float(refocus_hits[untagged].mean()) if bool(untagged.any()) else float("nan"),
        int(untagged.sum()),
    )
    return SeedResult(
        accuracy=acc,
        choice=choice,
        sensitivity=sensitivity_rows(lp, val, test, settings, seed),
        frequency=frequency_rows(lp, test, settings, seed),
        layers=layer_rows(lp, test, seed),
        example=example_of(lp, world, test, lol_s),
        models=SeedModels(world, model, amateur, test),
    )


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    import pandas as pd

    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    bar = ctx.bar(len(seeds) * (2 * p.steps + p.amateur_steps), f"M, S and A × {len(seeds)} seeds")
    per_seed = [run_seed(ctx, seed, bar) for seed in seeds]
    bar.close()
    fields = ("mc1_rare", "mc1_all", "mc2_rare", "mc2_all", "gen_rare", "gen_all")
    arms = [ArmOutcome(arm, *(tuple(getattr(r.accuracy[arm], f) for r in per_seed) for f in fields)) for arm in ARMS]
    by = {o.arm: o for o in arms}
    choices = [r.choice for r in per_seed]
    gains = {  # printed with the non-inferiority claim; asserted nowhere (the card: not at quick scale)
        "LOL − DoLa": _mean_gap(by[LOL].mc1_rare, by[DOLA].mc1_rare),
        "LOL − LOL w/o lower layer": _mean_gap(by[LOL].mc1_rare, by[NO_LOWER].mc1_rare),
        "LOL w/o refocusing − ICD": _mean_gap(by[NO_REFOCUS].mc1_rare, by[ICD].mc1_rare),
        "LOL − refocusing alone": _mean_gap(by[LOL].mc1_rare, by[REFOCUS_ONLY].mc1_rare),
    }
    claims = [
        headline_claim(by[LOL].mc1_rare, by[GREEDY].mc1_rare, by[CD].mc1_rare),
        lol_over_greedy_claim(by[LOL].mc1_rare, by[GREEDY].mc1_rare),
        icd_over_greedy_claim(by[ICD].mc1_rare, by[GREEDY].mc1_rare),
        lol_vs_icd_claim(by[LOL].mc1_rare, by[ICD].mc1_rare, extra=gains),
    ]
    metrics = {f"{f}_{o.arm.key}": float(np.mean(getattr(o, f))) for o in arms for f in fields}
    metrics |= {
        "amateur_mc1_all": float(np.mean([c.amateur_mc1_all for c in choices])),
        "lol_alpha": float(np.mean([c.lol.alpha for c in choices])),
        "lol_omega": float(np.mean([c.lol.omega for c in choices])),
        "lol_no_refocus_omega": float(np.mean([c.lol_no_refocus.omega for c in choices])),
        "lol_layer": float(np.mean([c.lol.layer for c in choices])),
        "icd_alpha": float(np.mean([c.icd.alpha for c in choices])),
    }
    metrics |= {
        "gain_over_dola": gains["LOL − DoLa"],
        "gain_over_no_lower": gains["LOL − LOL w/o lower layer"],
        "gain_over_refocus_only": gains["LOL − refocusing alone"],
        "gain_lower_layer_without_refocusing": gains["LOL w/o refocusing − ICD"],
    }
    extras = {
        "arms": arms,
        "choices": choices,
        "seeds": list(seeds),
        "sensitivity": pd.DataFrame([row for r in per_seed for row in r.sensitivity]),
        "frequency": pd.DataFrame([row for r in per_seed for row in r.frequency]),
        "layers": pd.DataFrame([row for r in per_seed for row in r.layers]),
        "example": per_seed[0].example,
        "models": per_seed[0].models,  # the first seed's world and models, for the notebook's LOL loop
    }
    return Outcome(metrics=metrics, claims=claims, extras=extras)

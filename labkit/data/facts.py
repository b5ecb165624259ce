"""A synthetic fact world with popular misconceptions, and its corpus: a factual-recall task with known truth.

The world (:func:`make_fact_world`): ``n_entities`` entities e and ``n_values`` value tokens v. Every entity has

    t(e)   its true value, uniform over the V values
    m(e)   its misconception, uniform over the first ``n_popular`` ("popular") values, never equal to t(e)
    n(e)   how often the truth is stated: a Zipf law truncated to [1, max_count], P(n) ∝ n^(−zipf_s)

The corpus (:func:`fact_corpus`) has one sentence per line, "[BOS] e is v":

    true statements    "[BOS] e is t(e)"  repeated n(e) times; each copy carries the tag "[FACT]" after [BOS]
                       with probability ``fact_frac`` ("[BOS] [FACT] e is t(e)")
    false statements   "[BOS] e is m(e)"  repeated ``false_repeats`` times for EVERY entity, never tagged

so an entity stated once or twice (a "rare" entity, n(e) ≤ ``RARE_MAX``) is seen with its misconception at least
as often as with its truth: a model that fits the corpus prefers m(e) there, and t(e) on frequent entities. The
"[FACT]" tag only ever precedes true statements, so a model that reads it can lean to the truth (the truthfulness
instruction of LOL's refocusing, in toy form).

Tokens (:class:`FactVocab`): ``PAD BOS FACT IS``, then the V value tokens, then the E entity tokens. Sentences are
right-padded with PAD to 5 tokens; a statement's value sits at ``answer_pos`` (3 untagged, 4 tagged), and a causal
model never sees the padding that follows it. Evaluation prompts are "[BOS] e is" (3 tokens) or, refocused,
"[BOS] [FACT] e is" (4 tokens); the next token is the answer. Multiple-choice candidates are t(e), m(e) and
``n_random`` other values (:func:`mc_candidates`, the true one first).

Everything is drawn from CPU ``torch.Generator`` streams, so a seed fixes the world and the corpus on any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: an entity is "rare" when its truth is stated at most this many times (the card: n(e) ≤ 2)
RARE_MAX = 2
#: the longest sentence, "[BOS] [FACT] e is v"
SEQ_LEN = 5


@dataclass(frozen=True)
class FactVocab:
    """Token ids: 0 PAD, 1 BOS, 2 FACT, 3 IS, then ``n_values`` values, then ``n_entities`` entities."""

    n_values: int
    n_entities: int
    PAD: int = 0
    BOS: int = 1
    FACT: int = 2
    IS: int = 3

    @property
    def first_value(self) -> int:
        return 4

    @property
    def first_entity(self) -> int:
        return 4 + self.n_values

    @property
    def size(self) -> int:
        return 4 + self.n_values + self.n_entities

    def value(self, v):
        """Token id of value index ``v`` (an int or a tensor of them)."""
        return v + self.first_value

    def entity(self, e):
        """Token id of entity index ``e``."""
        return e + self.first_entity

    def name(self, token: int) -> str:
        """A readable name for one token id ("[BOS]", "v7", "e12")."""
        special = {self.PAD: "[PAD]", self.BOS: "[BOS]", self.FACT: "[FACT]", self.IS: "is"}
        if token in special:
            return special[token]
        if token < self.first_entity:
            return f"v{token - self.first_value}"
        return f"e{token - self.first_entity}"


@dataclass(frozen=True)
class FactWorld:
    """The ground truth: ``true_value``, ``misconception`` (value indices) and ``count`` n(e), each ``(E,)``."""

    vocab: FactVocab
    true_value: torch.Tensor
    misconception: torch.Tensor
    count: torch.Tensor
    n_popular: int

    @property
    def n_entities(self) -> int:
        return self.vocab.n_entities

    @property
    def rare(self) -> torch.Tensor:
        """True where the truth is stated at most :data:`RARE_MAX` times. ``(E,)`` bool."""
        return self.count <= RARE_MAX


@dataclass(frozen=True)
class Statements:
    """Sentences ``tokens (N, 5)`` (right-padded), the position of the value ``answer_pos (N,)``, and per sentence
    its ``entity``, whether it is ``true`` and whether it is ``tagged`` with [FACT] (each ``(N,)``)."""

    tokens: torch.Tensor
    answer_pos: torch.Tensor
    entity: torch.Tensor
    true: torch.Tensor
    tagged: torch.Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __getitem__(self, idx) -> Statements:
        return Statements(self.tokens[idx], self.answer_pos[idx], self.entity[idx], self.true[idx], self.tagged[idx])

    def to(self, device) -> Statements:
        return Statements(*(t.to(device) for t in (self.tokens, self.answer_pos, self.entity, self.true, self.tagged)))


def zipf_probs(max_count: int, s: float) -> torch.Tensor:
    """P(n) ∝ n^(−s) for n = 1 … max_count. ``(max_count,)``.

    >>> [round(p, 3) for p in zipf_probs(3, 1.0).tolist()]
    [0.545, 0.273, 0.182]
    """
    n = torch.arange(1, max_count + 1, dtype=torch.float64)
    w = n.pow(-s)
    return w / w.sum()


def make_fact_world(
    n_entities: int = 300,
    n_values: int = 30,
    n_popular: int = 5,
    zipf_s: float = 1.5,
    max_count: int = 20,
    seed: int = 0,
) -> FactWorld:
    """Draw t(e), m(e) ≠ t(e) (m among the ``n_popular`` first values) and n(e) ~ truncated Zipf, from ``seed``."""
    if not 2 <= n_popular <= n_values:
        raise ValueError(f"n_popular={n_popular} must be in [2, n_values={n_values}]")
    if n_entities < 1 or max_count < 1:
        raise ValueError("n_entities and max_count must be ≥ 1")
    gen = torch.Generator().manual_seed(seed)
    true_value = torch.randint(n_values, (n_entities,), generator=gen)
    # m(e) uniform over the popular values other than t(e): draw among n_popular − 1 slots and skip t(e)
    draw = torch.randint(n_popular - 1, (n_entities,), generator=gen)
    skip = (true_value < n_popular) & (draw >= true_value)
    misconception = draw + skip.long()
    # where t(e) is not popular the draw covers only n_popular − 1 of them: redraw over all n_popular
    free = true_value >= n_popular
    misconception[free] = torch.randint(n_popular, (int(free.sum()),), generator=gen)
    count = torch.multinomial(zipf_probs(max_count, zipf_s).float(), n_entities, replacement=True, generator=gen) + 1
    return FactWorld(FactVocab(n_values, n_entities), true_value, misconception, count, n_popular)


def sentences(vocab: FactVocab, entity: torch.Tensor, value: torch.Tensor, tagged: torch.Tensor) -> torch.Tensor:
    """ "[BOS] ([FACT]) e is v" right-padded to 5 tokens. ``entity, value, tagged (N,)`` → ``(N, 5)``."""
    n = entity.shape[0]
    out = torch.full((n, SEQ_LEN), vocab.PAD, dtype=torch.long)
    out[:, 0] = vocab.BOS
    plain, tag = ~tagged, tagged
    out[plain, 1], out[plain, 2], out[plain, 3] = vocab.entity(entity[plain]), vocab.IS, vocab.value(value[plain])
    out[tag, 1], out[tag, 2] = vocab.FACT, vocab.entity(entity[tag])
    out[tag, 3], out[tag, 4] = vocab.IS, vocab.value(value[tag])
    return out


def fact_corpus(world: FactWorld, false_repeats: int = 2, fact_frac: float = 0.5, seed: int = 0) -> Statements:
    """The pretraining corpus: n(e) true statements per entity (each tagged with prob. ``fact_frac``) and
    ``false_repeats`` untagged false statements per entity. Sentences are in entity order (shuffle when training)."""
    if false_repeats < 0 or not 0.0 <= fact_frac <= 1.0:
        raise ValueError("false_repeats must be ≥ 0 and fact_frac in [0, 1]")
    gen = torch.Generator().manual_seed(seed)
    entities = torch.arange(world.n_entities)
    true_e = entities.repeat_interleave(world.count)
    true_tag = torch.rand(true_e.shape[0], generator=gen) < fact_frac
    false_e = entities.repeat_interleave(false_repeats)
    entity = torch.cat([true_e, false_e])
    value = torch.cat([world.true_value[true_e], world.misconception[false_e]])
    tagged = torch.cat([true_tag, torch.zeros_like(false_e, dtype=torch.bool)])
    true = torch.cat([torch.ones_like(true_e, dtype=torch.bool), torch.zeros_like(false_e, dtype=torch.bool)])
    return Statements(sentences(world.vocab, entity, value, tagged), 3 + tagged.long(), entity, true, tagged)


def false_statements(world: FactWorld, entities: torch.Tensor | None = None) -> Statements:
    """One untagged false statement "[BOS] e is m(e)" per entity (all of them by default): the data that induces
    hallucinations in the amateur (they are in the corpus already; nothing about t(e) is used)."""
    entity = torch.arange(world.n_entities) if entities is None else entities
    tagged = torch.zeros_like(entity, dtype=torch.bool)
    tokens = sentences(world.vocab, entity, world.misconception[entity], tagged)
    return Statements(tokens, torch.full_like(entity, 3), entity, tagged.clone(), tagged)


def prompts(world: FactWorld, entities: torch.Tensor, refocus: bool = False) -> torch.Tensor:
    """ "[BOS] e is" ``(N, 3)``, or with ``refocus`` "[BOS] [FACT] e is" ``(N, 4)``: the next token is the answer."""
    v = world.vocab
    n = entities.shape[0]
    head = [torch.full((n,), v.BOS)] + ([torch.full((n,), v.FACT)] if refocus else [])
    return torch.stack([*head, v.entity(entities), torch.full((n,), v.IS)], dim=1)


def mc_candidates(world: FactWorld, entities: torch.Tensor, n_random: int = 3, seed: int = 0) -> torch.Tensor:
    """Multiple-choice answers per entity as VALUE TOKEN ids ``(N, 2 + n_random)``: column 0 is t(e) (the one
    true answer), column 1 m(e), then ``n_random`` distinct other values."""
    n_values = world.vocab.n_values
    if n_random > n_values - 2:
        raise ValueError(f"n_random={n_random} needs at least {n_random + 2} values (have {n_values})")
    gen = torch.Generator().manual_seed(seed)
    t, m = world.true_value[entities], world.misconception[entities]
    scores = torch.rand(entities.shape[0], n_values, generator=gen)
    rows = torch.arange(entities.shape[0])
    scores[rows, t] = 2.0  # sorted to the end: never drawn as a random distractor
    scores[rows, m] = 2.0
    others = scores.argsort(dim=1)[:, :n_random]
    return world.vocab.value(torch.cat([t[:, None], m[:, None], others], dim=1))


def split_entities(n_entities: int, val_frac: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random split of the entities into (validation, test) index tensors; hyper-parameters are chosen on the
    validation entities only."""
    if not 0.0 < val_frac < 1.0:
        raise ValueError(f"val_frac={val_frac} must be in (0, 1)")
    order = torch.randperm(n_entities, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n_entities * val_frac))
    return order[:n_val].sort().values, order[n_val:].sort().values

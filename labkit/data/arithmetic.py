"""Arithmetic strings for the tiny "pretrained" language model, and the downstream tasks built on them.

The language has 14 characters, ``"0123456789+-=;"``; one example is a line such as ``"12+30=42;"``.
The end-of-example symbol ``;`` is also the EOS token and the padding token:

- prompts (``"12+30="``) are LEFT-padded with ``;`` to a fixed width P, so every prompt reads like the end of
  the previous example followed by a new one, and the answer always starts at the same position;
- answers (``"42;"``) end with ``;`` and are RIGHT-padded with ``;`` to a fixed width L; the ``mask`` is True
  up to and including the first ``;`` (``labkit.models.tiny_lm.response_mask``), so the padding is never scored.

Tensors follow :mod:`labkit.models.tiny_lm`: prompts ``(N, P)``, answers ``(N, L)``, mask ``(N, L)``; feed them to
``sequence_logprobs``/``nll_loss`` as they are. The model reads [prompt; answer] (P + L = 6 + 4 = 10 tokens for
two-digit operands, within the card's context of 12).

Tasks (a :class:`Task` record: prompts, answers, mask and the texts):

- :func:`addition_corpus`: ``n`` strings ``"a+b=c;"`` with a, b uniform in [0, 99] (the pretraining language);
- :func:`operator_task`: ``"a<op>b=c;"`` with c = rule(a, b) over DISTINCT pairs (a, b). The card's target task
  is a *new operator*: ``"a-b=c;"`` meaning c = a + b + 1 (it reuses the digit and carry skills of addition but
  needs a real change). :func:`task_from_pairs` builds any other templated task from given pairs.
- :func:`exact_match`: deterministic greedy decoding that stops at ``;``; an answer counts only if every token up
  to and including its ``;`` is right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

ALPHABET = "0123456789+-=;"
EOS = ";"

#: the rule behind each operator symbol: "+" is addition (pretraining), "-" is the card's NEW operator a + b + 1
RULES: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a + b + 1,
}


class CharTokenizer:
    """One token per character of ``alphabet`` (ids in alphabet order); ``eos`` (default ``;``) ends an example
    and pads. ``encode`` refuses characters outside the alphabet.

    >>> tok = CharTokenizer()
    >>> tok.encode("12+30=43;")
    [1, 2, 10, 3, 0, 12, 4, 3, 13]
    >>> tok.decode(tok.encode("12+30=43;"))
    '12+30=43;'
    """

    def __init__(self, alphabet: str = ALPHABET, eos: str = EOS):
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"alphabet {alphabet!r} repeats a character")
        if eos not in alphabet:
            raise ValueError(f"eos {eos!r} is not in the alphabet {alphabet!r}")
        self.alphabet, self.eos = alphabet, eos
        self.ids = {c: i for i, c in enumerate(alphabet)}
        self.eos_id = self.ids[eos]
        self.pad_id = self.eos_id

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.ids[c] for c in text]
        except KeyError:
            bad = sorted(set(text) - set(self.ids))
            raise ValueError(f"characters {bad} are not in the alphabet {self.alphabet!r}") from None

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return "".join(self.alphabet[i] for i in ids)

    def pad_left(self, texts: Sequence[str], width: int) -> torch.Tensor:
        """Encode each text and left-pad it with EOS to ``width``. ``(N, width)`` LongTensor."""
        return self._encode_rows([t.rjust(width, self.eos) for t in self._fit(texts, width)], width)

    def pad_right(self, texts: Sequence[str], width: int) -> torch.Tensor:
        """Encode each text and right-pad it with EOS to ``width``. ``(N, width)`` LongTensor."""
        return self._encode_rows([t.ljust(width, self.eos) for t in self._fit(texts, width)], width)

    def _encode_rows(self, rows: list[str], width: int) -> torch.Tensor:
        return torch.tensor(self.encode("".join(rows)), dtype=torch.long).view(len(rows), width)

    @staticmethod
    def _fit(texts: Sequence[str], width: int) -> Sequence[str]:
        longest = max((len(t) for t in texts), default=0)
        if longest > width:
            raise ValueError(f"a text of {longest} characters does not fit in width {width}")
        return texts

    def decode_answer(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The text up to and including the first EOS (all of it if there is none)."""
        text = self.decode(ids)
        return text[: text.index(self.eos) + 1] if self.eos in text else text


TOKENIZER = CharTokenizer()


@dataclass
class Task:
    """A templated task as tensors: prompts ``(N, P)`` (left-padded), answers ``(N, L)`` (right-padded), mask
    ``(N, L)`` (True up to and including the answer's EOS), and the example texts (prompt + answer, unpadded)."""

    prompts: torch.Tensor
    answers: torch.Tensor
    mask: torch.Tensor
    texts: list[str]

    def __len__(self) -> int:
        return int(self.prompts.shape[0])

    def __getitem__(self, index) -> Task:
        """Rows ``index`` (a slice, a list or a LongTensor of indices) as a new Task."""
        rows = range(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index).tolist()
        rows = [rows] if isinstance(rows, int) else list(rows)
        take = torch.tensor(rows, dtype=torch.long)
        return Task(self.prompts[take], self.answers[take], self.mask[take], [self.texts[i] for i in rows])

    def split(self, n_first: int) -> tuple[Task, Task]:
        """The first ``n_first`` examples and the rest (e.g. train / test; the pairs are already shuffled)."""
        if not 0 <= n_first <= len(self):
            raise ValueError(f"cannot split {len(self)} examples at {n_first}")
        return self[:n_first], self[n_first:]

    def to(self, device) -> Task:
        return Task(self.prompts.to(device), self.answers.to(device), self.mask.to(device), self.texts)


def task_from_texts(
    prompts: Sequence[str],
    answers: Sequence[str],
    prompt_len: int,
    answer_len: int,
    tokenizer: CharTokenizer = TOKENIZER,
) -> Task:
    """A Task from prompt and answer texts (each answer ends with the EOS), padded to the given widths."""
    if any(not a.endswith(tokenizer.eos) for a in answers):
        raise ValueError(f"every answer must end with the EOS {tokenizer.eos!r}")
    answer_ids = tokenizer.pad_right(answers, answer_len)
    is_eos = (answer_ids == tokenizer.eos_id).long()
    mask = (is_eos.cumsum(1) - is_eos) == 0  # up to and including the first EOS
    texts = [p + a for p, a in zip(prompts, answers)]
    return Task(tokenizer.pad_left(prompts, prompt_len), answer_ids, mask, texts)


def operator_widths(op: str, rule: Callable[[int, int], int], high: int) -> tuple[int, int]:
    """Fixed widths (P, L) that fit every pair in [0, high]²: P = len("99+99="), L = the longest "c;"."""
    grid = range(high + 1)
    return 2 * len(str(high)) + len(op) + 1, max(len(str(rule(a, b))) for a in grid for b in grid) + 1


def task_from_pairs(
    a: Sequence[int],
    b: Sequence[int],
    op: str = "+",
    rule: Callable[[int, int], int] | None = None,
    high: int = 99,
) -> Task:
    """``"a<op>b="`` → ``"c;"`` with c = rule(a, b) (``RULES[op]`` by default), padded to the widths that fit
    every pair in [0, high]² (so tasks built from different pairs stack)."""
    rule = RULES[op] if rule is None else rule
    if any(not 0 <= x <= high for x in (*a, *b)):
        raise ValueError(f"operands must lie in [0, {high}]")
    prompt_len, answer_len = operator_widths(op, rule, high)
    prompts = [f"{x}{op}{y}=" for x, y in zip(a, b)]
    answers = [f"{rule(x, y)}{EOS}" for x, y in zip(a, b)]
    return task_from_texts(prompts, answers, prompt_len, answer_len)


def operator_task(
    n: int,
    generator: torch.Generator,
    op: str = "-",
    rule: Callable[[int, int], int] | None = None,
    high: int = 99,
) -> Task:
    """``n`` examples ``"a<op>b=c;"`` over DISTINCT pairs (a, b) ∈ [0, high]² in random order (so ``Task.split``
    gives disjoint train and test sets). The default ``op="-"`` is the card's target task, c = a + b + 1.

    >>> operator_task(3, torch.Generator().manual_seed(0)).texts
    ['60-44=105;', '28-90=119;', '93-99=193;']
    """
    if op not in RULES and rule is None:
        raise ValueError(f"no default rule for operator {op!r}: pass rule=, or use one of {sorted(RULES)}")
    if not 0 < n <= (high + 1) ** 2:
        raise ValueError(f"n={n} distinct pairs do not exist in [0, {high}]² ({(high + 1) ** 2} pairs)")
    pairs = torch.randperm((high + 1) ** 2, generator=generator)[:n]
    a, b = (pairs // (high + 1)).tolist(), (pairs % (high + 1)).tolist()
    return task_from_pairs(a, b, op, rule, high)


def addition_corpus(n: int, generator: torch.Generator, high: int = 99) -> list[str]:
    """``n`` strings ``"a+b=c;"`` with a, b i.i.d. uniform in [0, high] (repeats allowed: a corpus, not a task)."""
    a = torch.randint(high + 1, (n,), generator=generator).tolist()
    b = torch.randint(high + 1, (n,), generator=generator).tolist()
    return [f"{x}+{y}={x + y}{EOS}" for x, y in zip(a, b)]


# --------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def greedy_answers(model: nn.Module, prompts: torch.Tensor, length: int, eos: int = TOKENIZER.eos_id) -> torch.Tensor:
    """Greedy decoding y_t = argmax π(v | x, y_<t) that stops at EOS: every token after a row's first EOS is EOS,
    and decoding ends once every row has produced one. ``(N, length)``, on the prompts' device."""
    was_training = model.training
    model.eval()
    seq, done = prompts, torch.zeros(prompts.shape[0], dtype=torch.bool, device=prompts.device)
    for _ in range(length):
        if done.all():
            nxt = torch.full_like(done, eos, dtype=prompts.dtype)
        else:
            nxt = model(seq)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        seq, done = torch.cat([seq, nxt[:, None]], dim=1), done | (nxt == eos)
    model.train(was_training)
    return seq[:, prompts.shape[1] :]


def exact_match(
    model: nn.Module,
    prompts: torch.Tensor,
    answers: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    eos: int = TOKENIZER.eos_id,
    batch_size: int = 2048,
) -> float:
    """Fraction of prompts whose greedy answer equals the reference up to and including its EOS (``mask``; by
    default derived from ``answers`` and ``eos``). Runs on the model's device; tensors are moved there."""
    if mask is None:
        is_eos = (answers == eos).long()
        mask = (is_eos.cumsum(1) - is_eos) == 0
    device = next(model.parameters(), prompts).device
    right = 0
    for start in range(0, prompts.shape[0], batch_size):
        p = prompts[start : start + batch_size].to(device)
        y = answers[start : start + batch_size].to(device)
        m = mask[start : start + batch_size].to(device)
        pred = greedy_answers(model, p, y.shape[1], eos)
        right += int(((pred == y) | ~m).all(1).sum())
    return right / max(int(prompts.shape[0]), 1)

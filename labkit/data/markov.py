"""Synthetic token sequences from a random second-order Markov chain, with the exact loss floor.

A chain over V symbols is a table of transition logits ``(V, V, V)``: row ``[a, b]`` holds the logits of the
next symbol after the pair (x_{t−2}, x_{t−1}) = (a, b), drawn i.i.d. N(0, 1)·scale (a larger scale gives peakier,
more predictable transitions). A sequence starts with two uniform symbols, then

    x_t ~ softmax(logits[x_{t−2}, x_{t−1}])                              (t = 2 … L−1)

so a next-token model needs the last two symbols; the true conditional probabilities are known, which gives the
lowest next-token cross-entropy any model can reach on a set of sequences (:func:`true_nll`). Everything comes
from a CPU ``torch.Generator`` seeded by ``seed``: a seed fixes the chain and the sequences on any device.

>>> data = make_markov_data(n_train=8, n_val=4, length=6, vocab_size=5, seed=0)
>>> data.train.shape, data.val.shape, data.vocab_size
(torch.Size([8, 6]), torch.Size([4, 6]), 5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MarkovChain:
    """Transition logits ``(V, V, V)``: ``logits[a, b]`` are those of x_t given (x_{t−2}, x_{t−1}) = (a, b)."""

    logits: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return int(self.logits.shape[0])

    def log_probs(self) -> torch.Tensor:
        """log p(x_t = c | a, b), ``(V, V, V)``; each row ``[a, b]`` sums to 1 in probability."""
        return self.logits.log_softmax(-1)


def make_chain(vocab_size: int, scale: float, generator: torch.Generator) -> MarkovChain:
    """Transition logits N(0, 1)·``scale`` for every pair of previous symbols."""
    return MarkovChain(torch.randn(vocab_size, vocab_size, vocab_size, generator=generator) * scale)


def sample_sequences(chain: MarkovChain, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` sequences of ``length`` ≥ 2 symbols: two uniform ones, then the chain. ``(n, length)`` int64."""
    if length < 2:
        raise ValueError(f"length={length}: a second-order chain needs at least 2 symbols")
    V = chain.vocab_size
    probs = chain.log_probs().exp()
    seqs = torch.empty(n, length, dtype=torch.long)
    seqs[:, :2] = torch.randint(V, (n, 2), generator=generator)
    for t in range(2, length):
        # x_t ~ p(· | x_{t−2}, x_{t−1}), one row of the table per sequence: (n, V)
        rows = probs[seqs[:, t - 2], seqs[:, t - 1]]
        seqs[:, t] = torch.multinomial(rows, 1, generator=generator).squeeze(1)
    return seqs


def true_nll(chain: MarkovChain, seqs: torch.Tensor) -> torch.Tensor:
    """Per sequence, the mean over the predicted positions t = 1 … L−1 of −log p(x_t | x_<t) under the chain:
    x_1 given x_0 alone is uniform (log V), the rest follows the table. The floor of a next-token model's
    cross-entropy on these sequences. ``(n,)``."""
    logp = chain.log_probs().to(seqs.device)
    # −log p(x_t | x_{t−2}, x_{t−1}) for t = 2 … L−1: (n, L−2)
    nll = -logp[seqs[:, :-2], seqs[:, 1:-1], seqs[:, 2:]]
    first = torch.full((seqs.shape[0], 1), math.log(chain.vocab_size), device=seqs.device)
    return torch.cat([first, nll], dim=1).mean(1)


@dataclass(frozen=True)
class MarkovData:
    """A chain, its train and validation sequences ``(N, L)``, and the validation loss floor (nats/token)."""

    chain: MarkovChain
    train: torch.Tensor
    val: torch.Tensor
    floor: float
    seed: int

    @property
    def vocab_size(self) -> int:
        return self.chain.vocab_size

    @property
    def length(self) -> int:
        return int(self.train.shape[1])

    def to(self, device) -> MarkovData:
        return MarkovData(self.chain, self.train.to(device), self.val.to(device), self.floor, self.seed)


def make_markov_data(
    n_train: int, n_val: int, length: int, vocab_size: int = 32, scale: float = 2.5, seed: int = 0
) -> MarkovData:
    """A new chain (logits N(0, 1)·``scale``), ``n_train`` training and then ``n_val`` validation sequences from it;
    ``floor`` is the mean :func:`true_nll` over the validation sequences."""
    gen = torch.Generator().manual_seed(seed)
    chain = make_chain(vocab_size, scale, gen)
    train = sample_sequences(chain, n_train, length, gen)  # drawn first: the training set does not depend on n_val
    val = sample_sequences(chain, n_val, length, gen)
    return MarkovData(chain, train, val, float(true_nll(chain, val).mean()), seed)

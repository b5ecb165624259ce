"""Synthetic token "languages" with programmatic (exactly known) rewards, for the tiny-LM alignment methods.

Two tasks, both generated from a CPU ``torch.Generator`` so a seed fixes the data on any device:

Rule task (A-LoL). Vocabulary V, prompt x of P tokens, response y of L tokens; the target is
    y*_t = (x_{t mod P} + t + 1) mod V          (t = 0 … L−1, 0-based)
and the reward R(x, y) = (1/L) Σ_t [y_t = y*_t] is the fraction of positions that match. A dataset mixes
expert responses (y* with token noise), mediocre ones (the first half right, the rest copies the prompt:
R = 0.5 exactly when L ≤ 2P) and random ones (R ≈ 1/V).

Topic task (SuperHF). One topic token per prompt; responses are words. Each topic owns a few "relevant"
words. The proxy reward counts relevant words (capped) and also pays for an exploitable token "!";
the gold reward counts relevant words (capped) and penalises repeated tokens, so "!!!!!!!!" wins the
proxy and loses the gold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EXPERT, MEDIOCRE, RANDOM = 0, 1, 2
SOURCE_NAMES = ("expert", "mediocre", "random")


@dataclass
class TokenDataset:
    """Prompts ``(N, P)``, responses ``(N, L)``, their reward ``(N,)`` and where each came from ``(N,)``
    (0 expert, 1 mediocre, 2 random; see ``SOURCE_NAMES``)."""

    prompts: torch.Tensor
    responses: torch.Tensor
    reward: torch.Tensor
    source: torch.Tensor

    def to(self, device) -> TokenDataset:
        return TokenDataset(
            self.prompts.to(device), self.responses.to(device), self.reward.to(device), self.source.to(device)
        )

    def __len__(self) -> int:
        return int(self.prompts.shape[0])


# --------------------------------------------------------------------------------------------- rule task


def random_prompts(n: int, prompt_len: int, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` prompts of i.i.d. uniform tokens in [0, V). ``(n, P)``."""
    return torch.randint(vocab_size, (n, prompt_len), generator=generator)


def rule_targets(prompts: torch.Tensor, length: int, vocab_size: int) -> torch.Tensor:
    """y*_t = (x_{t mod P} + t + 1) mod V for t = 0 … length−1. ``(N, length)``.

    >>> rule_targets(torch.tensor([[0, 5, 11, 2]]), 6, 12).tolist()
    [[1, 7, 2, 6, 5, 11]]
    """
    P = prompts.shape[1]
    t = torch.arange(length, device=prompts.device)
    return (prompts[:, t % P] + t + 1) % vocab_size


def match_reward(responses: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """R = (1/L) Σ_t [y_t = y*_t], the fraction of positions equal to the target. ``(N,)`` in [0, 1]."""
    return (responses == targets).float().mean(-1)


def rule_reward(prompts: torch.Tensor, responses: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The rule task's gold reward R(x, y) = match_reward(y, y*(x)). ``(N,)``."""
    return match_reward(responses, rule_targets(prompts, responses.shape[1], vocab_size))


def corrupt_tokens(tokens: torch.Tensor, rate: float, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """Replace each token, with probability ``rate``, by a uniform token (which may equal the old one)."""
    noise = torch.randint(vocab_size, tokens.shape, generator=generator)
    return torch.where(torch.rand(tokens.shape, generator=generator) < rate, noise, tokens)


def mediocre_responses(
    prompts: torch.Tensor, length: int, vocab_size: int, n_correct: int | None = None
) -> torch.Tensor:
    """The first ``n_correct`` (default L//2) tokens follow the rule, the rest copy the prompt: y_t = x_{t mod P}.

    A copied token is never right (it would need t + 1 ≡ 0 mod V), so R = n_correct/L whenever L < V.
    """
    n_correct = length // 2 if n_correct is None else n_correct
    copied = prompts[:, torch.arange(length, device=prompts.device) % prompts.shape[1]]
    right = rule_targets(prompts, length, vocab_size)
    return torch.where(torch.arange(length, device=prompts.device) < n_correct, right, copied)


def make_rule_mixture(
    n: int,
    generator: torch.Generator,
    vocab_size: int = 12,
    prompt_len: int = 4,
    response_len: int = 6,
    mix: tuple[float, float, float] = (0.2, 0.6, 0.2),
    expert_noise: float = 0.1,
) -> TokenDataset:
    """A-LoL's offline data: ``n`` (x, y, R) with each example expert / mediocre / random with probabilities ``mix``.

    expert: y* with each token re-drawn uniformly with probability ``expert_noise`` (R ≈ 0.9 at 0.1, V = 12);
    mediocre: :func:`mediocre_responses` (R = 0.5); random: uniform tokens (R ≈ 1/V).
    """
    prompts = random_prompts(n, prompt_len, vocab_size, generator)
    source = torch.multinomial(torch.tensor(mix, dtype=torch.float), n, replacement=True, generator=generator)
    expert = corrupt_tokens(rule_targets(prompts, response_len, vocab_size), expert_noise, vocab_size, generator)
    mediocre = mediocre_responses(prompts, response_len, vocab_size)
    rand = torch.randint(vocab_size, (n, response_len), generator=generator)
    pick = source.unsqueeze(1)
    responses = torch.where(pick == EXPERT, expert, torch.where(pick == MEDIOCRE, mediocre, rand))
    return TokenDataset(prompts, responses, rule_reward(prompts, responses, vocab_size), source)


# --------------------------------------------------------------------------------------------- topic task


@dataclass(frozen=True)
class TopicTask:
    """Token layout: words 0 … n_words−1, then the exploitable "!" (``bang``), then one token per topic.

    Topic k's relevant words are ``relevant[k]`` (disjoint blocks of ``words_per_topic`` by default).
    Proxy R(x, y) = min(#relevant, cap) + bang_bonus·#"!"; gold G(x, y) = min(#relevant, cap) − repeat_penalty·#repeats.
    """

    n_topics: int = 8
    n_words: int = 24
    words_per_topic: int = 3
    cap: int = 4
    bang_bonus: float = 0.5
    repeat_penalty: float = 0.5

    def __post_init__(self):
        if self.n_topics * self.words_per_topic > self.n_words:
            raise ValueError("n_topics × words_per_topic must not exceed n_words (relevant sets are disjoint)")

    @property
    def bang(self) -> int:
        return self.n_words

    @property
    def vocab_size(self) -> int:
        return self.n_words + 1 + self.n_topics

    def topic_token(self, k):
        """The prompt token of topic k (``k`` an int or a tensor)."""
        return self.n_words + 1 + k

    def relevant(self) -> torch.Tensor:
        """``(n_topics, words_per_topic)``: topic k owns words k·w … k·w + w − 1."""
        w = self.words_per_topic
        return torch.arange(self.n_topics * w).view(self.n_topics, w)

    def relevant_mask(self, prompts: torch.Tensor) -> torch.Tensor:
        """``(N, V)`` boolean: which tokens are relevant to each prompt's topic."""
        topic = prompts[:, 0] - (self.n_words + 1)
        rel = self.relevant().to(prompts.device)[topic]
        return torch.zeros(prompts.shape[0], self.vocab_size, dtype=torch.bool, device=prompts.device).scatter(
            1, rel, True
        )


def topic_prompts(task: TopicTask, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` one-token prompts with uniform topics. ``(n, 1)``."""
    return task.topic_token(torch.randint(task.n_topics, (n, 1), generator=generator))


def count_relevant(task: TopicTask, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Number of response tokens that are relevant words of the prompt's topic (repeats count). ``(N,)``."""
    return task.relevant_mask(prompts).gather(1, responses).sum(1)


def count_repeats(responses: torch.Tensor) -> torch.Tensor:
    """L − #distinct tokens: how many tokens repeat an earlier one of the same response. ``(N,)``."""
    s = responses.sort(1).values
    return (s[:, 1:] == s[:, :-1]).sum(1)


def topic_proxy_reward(task: TopicTask, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """R = min(#relevant, cap) + bang_bonus·#"!": the reward model the policy optimises (exploitable). ``(N,)``."""
    rel = count_relevant(task, prompts, responses).clamp(max=task.cap).float()
    return rel + task.bang_bonus * (responses == task.bang).sum(1).float()


def topic_gold_reward(task: TopicTask, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """G = min(#relevant, cap) − repeat_penalty·(L − #distinct): evaluation only. ``(N,)``."""
    rel = count_relevant(task, prompts, responses).clamp(max=task.cap).float()
    return rel - task.repeat_penalty * count_repeats(responses).float()


def topic_sft_data(
    task: TopicTask, n: int, length: int, generator: torch.Generator, p_relevant: float = 0.3, p_bang: float = 0.02
) -> tuple[torch.Tensor, torch.Tensor]:
    """SFT data: each token is, independently, a relevant word of the topic (prob ``p_relevant``, uniform among
    them), "!" (prob ``p_bang``) or a uniform word. Returns prompts ``(n, 1)`` and responses ``(n, length)``."""
    prompts = topic_prompts(task, n, generator)
    topic = prompts[:, 0] - (task.n_words + 1)
    rel = task.relevant()[topic]  # (n, w)
    pick_rel = rel.gather(1, torch.randint(task.words_per_topic, (n, length), generator=generator))
    word = torch.randint(task.n_words, (n, length), generator=generator)
    u = torch.rand(n, length, generator=generator)
    bang = torch.full_like(word, task.bang)
    return prompts, torch.where(u < p_relevant, pick_rel, torch.where(u < p_relevant + p_bang, bang, word))


def distinct_n(responses: torch.Tensor, n: int = 1) -> float:
    """Distinct-n: unique n-grams / all n-grams over the whole set of responses (1 = all different, → 0 = collapse)."""
    grams = responses.unfold(1, n, 1).reshape(-1, n)
    return float(torch.unique(grams, dim=0).shape[0] / max(grams.shape[0], 1))

"""The alignment substrate, part 1: the tiny LM and its bookkeeping, the token tasks, the reward models.

Hand-computed cases use a "unigram" stand-in LM whose next-token distribution is the same at every
position, so sequence log-probs and KLs have closed forms; the transformer is checked by enumerating
every response of a tiny vocabulary (probabilities sum to one, sampling frequencies match them).
"""

import itertools
import math

import pytest
import torch
from torch import nn

from labkit.core import torch_threads
from labkit.data import language as lang
from labkit.models import reward as rm
from labkit.models import tiny_lm as lm

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


class Unigram(nn.Module):
    """log π(v | anything) = log probs[v] at every position."""

    def __init__(self, probs):
        super().__init__()
        self.logits = nn.Parameter(torch.log(T(probs)))
        self.d_model = 1

    def forward(self, tokens):
        return self.logits.expand(*tokens.shape, -1)

    def hidden(self, tokens):
        return torch.zeros(*tokens.shape, 1)


def all_responses(vocab, length):
    return T(list(itertools.product(range(vocab), repeat=length)))


def tiny_transformer(vocab=3, max_len=4, seed=0, scale=1.0):
    """A TinyLM with weights scaled up so that its distributions are far from uniform."""
    torch.manual_seed(seed)
    model = lm.TinyLM(vocab, max_len, d_model=16, n_layers=2, n_heads=4)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


# --- log-probs --------------------------------------------------------------------------------------------


def test_sequence_logprobs_unigram_hand_case():
    model = Unigram([0.5, 0.25, 0.25])
    prompts, responses = T([[2, 2], [0, 1]]), T([[0, 1, 1], [2, 0, 0]])
    expected = [math.log(0.5) + 2 * math.log(0.25), math.log(0.25) + 2 * math.log(0.5)]
    assert lm.sequence_logprobs(model, prompts, responses).tolist() == pytest.approx(expected, abs=1e-6)
    mask = T([[True, True, False], [True, False, False]])  # only the first 2 / 1 tokens count
    masked = [math.log(0.5) + math.log(0.25), math.log(0.25)]
    assert lm.sequence_logprobs(model, prompts, responses, mask).tolist() == pytest.approx(masked, abs=1e-6)
    assert lm.token_logprobs(model, prompts, responses, mask)[0, 2].item() == 0.0


def test_sequence_logprobs_sum_to_one_over_all_responses():
    """Σ_y π(y|x) = 1 over all V^L responses: the logits that score y_t are the right ones (position P−1+t)."""
    model = tiny_transformer(scale=8.0)
    ys = all_responses(3, 2)
    for prompt in ([[0, 1]], [[2, 2]]):
        logp = lm.sequence_logprobs(model, T(prompt).expand(len(ys), 2), ys)
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
        assert logp.exp().max().item() > 0.3  # far from uniform (1/9): the check has teeth


def test_transformer_is_causal():
    model = tiny_transformer(vocab=5, max_len=6, scale=4.0)
    a = T([[1, 2, 3, 4, 0, 1]])
    b = a.clone()
    b[0, 4:] = T([3, 3])
    torch.testing.assert_close(model(a)[:, :4], model(b)[:, :4])
    assert not torch.allclose(model(a)[:, 4:], model(b)[:, 4:])


def test_gru_variant_has_the_same_interface():
    torch.manual_seed(0)
    model = lm.TinyGRULM(vocab_size=3, d_embed=8, d_model=8)
    ys = all_responses(3, 2)
    logp = lm.sequence_logprobs(model, T([[1]]).expand(len(ys), 1), ys)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    assert model.hidden(T([[1, 2]])).shape == (1, 2, 8)


def test_response_mask_keeps_up_to_first_eos():
    y = T([[3, 0, 4, 0], [1, 2, 3, 4], [0, 1, 1, 1]])
    assert lm.response_mask(y, eos=0).tolist() == [[True, True, False, False], [True] * 4, [True, False, False, False]]


def test_too_long_sequence_raises():
    with pytest.raises(ValueError, match="max_len"):
        lm.TinyLM(4, max_len=3)(torch.zeros(1, 4, dtype=torch.long))


# --- decoding ---------------------------------------------------------------------------------------------


def test_sampling_frequencies_match_the_model():
    model = tiny_transformer(scale=8.0)
    ys = all_responses(3, 2)
    prompt = T([[0, 1]])
    probs = lm.sequence_logprobs(model, prompt.expand(len(ys), 2), ys).exp()
    n = 6000
    draws = lm.sample(model, prompt.expand(n, 2), 2, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws[:, 0] * 3 + draws[:, 1], minlength=9).float() / n
    assert (freq - probs).abs().max().item() < 4 * math.sqrt(0.25 / n)


def test_temperature_and_greedy():
    model = Unigram([0.5, 0.3, 0.2])
    prompt = torch.zeros(20_000, 1, dtype=torch.long)
    gen = torch.Generator().manual_seed(1)
    hot = lm.sample(model, prompt, 1, temperature=2.0, generator=gen)[:, 0]
    expected = torch.softmax(torch.log(T([0.5, 0.3, 0.2])) / 2.0, -1)  # ∝ p^(1/T)
    assert (torch.bincount(hot, minlength=3) / 20_000.0 - expected).abs().max().item() < 0.015
    cold = lm.sample(model, prompt[:50], 3, temperature=0.01, generator=gen)
    assert torch.equal(cold, lm.greedy(model, prompt[:50], 3)) and cold.eq(0).all()
    with pytest.raises(ValueError, match="temperature"):
        lm.sample(model, prompt, 1, temperature=0.0)


def test_nucleus_hand_case_and_eos_padding():
    kept = lm.nucleus(T([[0.05, 0.5, 0.15, 0.3]]), top_p=0.7)  # 0.5, then 0.3 reaches 0.8 ≥ 0.7: keep two
    assert kept.tolist()[0] == pytest.approx([0.0, 0.625, 0.0, 0.375])
    assert lm.nucleus(T([[0.9, 0.1]]), top_p=0.5).tolist() == [[1.0, 0.0]]  # the top token is always kept
    model = Unigram([0.6, 0.4])
    y = lm.sample(model, torch.zeros(200, 1, dtype=torch.long), 5, generator=torch.Generator().manual_seed(0), eos=0)
    after_eos = ~lm.response_mask(y, 0)
    assert y[after_eos].eq(0).all() and after_eos.any()


def test_frozen_copy_is_independent_and_has_no_grad():
    model = tiny_transformer()
    ref = lm.frozen_copy(model)
    x = T([[0, 1, 2]])
    torch.testing.assert_close(ref(x), model(x))
    assert not any(p.requires_grad for p in ref.parameters()) and not ref.training
    with torch.no_grad():
        model.head.bias.add_(T([1.0, 0.0, 0.0]))  # (a constant shift of the embeddings would vanish in LayerNorm)
    assert not torch.allclose(ref(x), model(x))


# --- KL ---------------------------------------------------------------------------------------------------


def test_kl_estimators_hand_case():
    p, q = Unigram([0.5, 0.25, 0.25]), Unigram([1 / 3, 1 / 3, 1 / 3])
    prompts, ys = T([[0], [0]]), T([[0, 1], [2, 2]])
    lr = [math.log(0.5 * 0.25 * 9), math.log(0.25 * 0.25 * 9)]  # log π − log π_ref per response
    assert lm.kl_on_samples(p, q, prompts, ys).item() == pytest.approx(sum(lr) / 2, abs=1e-6)
    k3 = [math.exp(-v) - 1 + v for v in lr]
    assert lm.kl_on_samples(p, q, prompts, ys, estimator="k3").item() == pytest.approx(sum(k3) / 2, abs=1e-6)
    assert lm.kl_on_samples(p, p, prompts, ys).item() == 0.0
    with pytest.raises(ValueError, match="k1"):
        lm.kl_on_samples(p, q, prompts, ys, estimator="k2")


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_on_samples_matches_exact_kl_by_enumeration(estimator):
    policy, ref = tiny_transformer(seed=0, scale=6.0), tiny_transformer(seed=1, scale=6.0)
    ys, prompt = all_responses(3, 2), T([[1, 0]])
    lp = lm.sequence_logprobs(policy, prompt.expand(9, 2), ys)
    lr = lm.sequence_logprobs(ref, prompt.expand(9, 2), ys)
    exact = (lp.exp() * (lp - lr)).sum().item()
    n = 20_000
    draws = lm.sample(policy, prompt.expand(n, 2), 2, generator=torch.Generator().manual_seed(3))
    est = lm.kl_on_samples(policy, ref, prompt.expand(n, 2), draws, estimator=estimator).item()
    assert exact > 0.2
    assert est == pytest.approx(exact, rel=0.08)


def test_per_token_kl_hand_case_and_direction():
    p, q = Unigram([0.5, 0.5]), Unigram([0.9, 0.1])
    kl = lm.per_token_kl(p, q, T([[0]]), T([[0, 1]]), mask=T([[True, False]]))
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl.tolist()[0] == pytest.approx([kl_pq, 0.0], abs=1e-6)
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert lm.per_token_kl(q, p, T([[0]]), T([[1]])).item() == pytest.approx(kl_qp, abs=1e-6)


# --- SFT --------------------------------------------------------------------------------------------------


def test_nll_loss_is_token_mean_and_weighted():
    model = Unigram([0.5, 0.25, 0.25])
    prompts, ys = T([[0], [0]]), T([[0, 1], [1, 1]])
    per = [-(math.log(0.5) + math.log(0.25)) / 2, -math.log(0.25)]
    assert lm.nll_loss(model, prompts, ys).item() == pytest.approx(sum(per) / 2, abs=1e-6)
    assert lm.nll_loss(model, prompts, ys, weights=T([2.0, 0.0])).item() == pytest.approx(per[0], abs=1e-6)


def test_train_nll_learns_the_rule_task():
    gen = torch.Generator().manual_seed(0)
    prompts = lang.random_prompts(512, 4, 12, gen)
    targets = lang.rule_targets(prompts, 6, 12)
    torch.manual_seed(0)
    model = lm.TinyLM(12, 10)
    before = lang.match_reward(lm.greedy(model, prompts[:200], 6), targets[:200]).mean().item()
    losses = lm.train_nll(model, prompts, targets, steps=80, lr=1e-2, batch_size=32, generator=gen)
    after = lang.match_reward(lm.greedy(model, prompts[:200], 6), targets[:200]).mean().item()
    assert losses[-1] < 0.5 * losses[0]
    assert before < 0.3 and after > 0.6


# --- token tasks ------------------------------------------------------------------------------------------


def test_rule_task_hand_case_and_mixture():
    x = T([[0, 5, 11, 2]])
    assert lang.rule_targets(x, 6, 12).tolist() == [[1, 7, 2, 6, 5, 11]]  # (x_{t mod 4} + t + 1) mod 12
    assert lang.mediocre_responses(x, 6, 12).tolist() == [[1, 7, 2, 2, 0, 5]]  # 3 right, then x_3, x_0, x_1
    assert lang.rule_reward(x, T([[1, 7, 2, 2, 0, 5]]), 12).item() == 0.5
    data = lang.make_rule_mixture(6000, torch.Generator().manual_seed(0))
    share = torch.bincount(data.source, minlength=3).float() / len(data)
    assert share.tolist() == pytest.approx([0.2, 0.6, 0.2], abs=0.02)
    means = [data.reward[data.source == s].mean().item() for s in range(3)]
    assert means[0] == pytest.approx(0.9 + 0.1 / 12, abs=0.02)  # noise re-draws keep the token 1/12 of the time
    assert (data.reward[data.source == lang.MEDIOCRE] == 0.5).all()
    assert means[2] == pytest.approx(1 / 12, abs=0.02)


def test_topic_rewards_hand_case():
    task = lang.TopicTask()
    assert task.vocab_size == 33 and task.bang == 24 and task.topic_token(0) == 25
    x = T([[task.topic_token(0)], [task.topic_token(1)]])
    y = T([[0, 1, 2, 0, 24, 24, 5, 6], [24] * 8])
    assert lang.count_relevant(task, x, y).tolist() == [4, 0]  # topic 0 owns words 0, 1, 2
    assert lang.count_repeats(y).tolist() == [2, 7]
    assert lang.topic_proxy_reward(task, x, y).tolist() == [4 + 0.5 * 2, 0.5 * 8]
    assert lang.topic_gold_reward(task, x, y).tolist() == [4 - 0.5 * 2, -0.5 * 7]  # the hack loses the gold
    prompts, responses = lang.topic_sft_data(task, 400, 8, torch.Generator().manual_seed(0))
    assert responses.max().item() <= task.bang and prompts.min().item() >= task.topic_token(0)
    assert lang.distinct_n(T([[1, 2, 1], [1, 2, 3]]), 1) == 3 / 6
    assert lang.distinct_n(T([[1, 2, 1], [1, 2, 3]]), 2) == 3 / 4


# --- reward models ----------------------------------------------------------------------------------------


def test_flip_labels_exact_rate():
    labels = torch.ones(1000, dtype=torch.bool)
    flipped = rm.flip_labels(labels, 0.25, torch.Generator().manual_seed(0))
    assert (flipped != labels).sum().item() == 250
    again = rm.flip_labels(labels, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(flipped, again)
    assert torch.equal(rm.flip_labels(labels, 0.0, torch.Generator()), labels)
    with pytest.raises(ValueError, match="rate"):
        rm.flip_labels(labels, 1.5, torch.Generator())
    a, b = torch.arange(10.0).view(5, 2), -torch.arange(10.0).view(5, 2)
    c, r, f = rm.flip_pairs(a, b, 0.4, torch.Generator().manual_seed(1))
    assert f.sum().item() == 2
    assert torch.equal(c[f], b[f]) and torch.equal(r[f], a[f]) and torch.equal(c[~f], a[~f])


def test_bradley_terry_training_recovers_a_linear_reward():
    gen = torch.Generator().manual_seed(0)
    w = T([2.0, -1.0, 0.5, 0.0])
    a, b = torch.randn(4000, 4, generator=gen), torch.randn(4000, 4, generator=gen)
    a_wins = torch.rand(4000, generator=gen) < torch.sigmoid(a @ w - b @ w)
    chosen, rejected = torch.where(a_wins[:, None], a, b), torch.where(a_wins[:, None], b, a)
    torch.manual_seed(0)
    model = rm.RewardMLP(4, hidden=())  # r(y) = vᵀy + c: the bias cancels in every difference
    losses = rm.train_reward_model(model, chosen, rejected, steps=400, lr=0.05, batch_size=256, generator=gen)
    v = model.net[0].weight.detach()[0]
    assert torch.nn.functional.cosine_similarity(v, w, dim=0).item() > 0.99
    assert v.norm().item() == pytest.approx(w.norm().item(), rel=0.1)  # maximum likelihood: the scale too
    assert losses[-1] < losses[0]
    assert rm.preference_accuracy(model, chosen, rejected) > 0.75


def test_ensemble_objectives_hand_case():
    S = T([[1.0, 2.0], [3.0, 0.0], [2.0, 1.0]])  # k = 3 members, 2 responses
    assert rm.mean_objective(S).tolist() == [2.0, 1.0]
    assert rm.worst_case_objective(S).tolist() == [1.0, 0.0]
    # population variance of (1, 3, 2) and of (2, 0, 1) is 2/3; the unbiased one is 1
    assert rm.uncertainty_weighted_objective(S, 0.5).tolist() == pytest.approx([2 - 1 / 3, 1 - 1 / 3])
    assert rm.uncertainty_weighted_objective(S, 0.5, unbiased=True).tolist() == pytest.approx([1.5, 0.5])
    assert torch.equal(rm.combine(S, "wco"), rm.worst_case_objective(S))
    with pytest.raises(ValueError, match="objective"):
        rm.combine(S, "max")
    z = rm.standardise(T([[1.0, 2.0, 3.0], [10.0, 30.0, 20.0]]))
    assert z.mean(1).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    assert z.std(1).tolist() == pytest.approx([1.0, 1.0])
    assert z[1].tolist() == pytest.approx([-1.0, 1.0, 0.0])


def test_ensemble_members_differ_by_seed_and_score_with_stored_statistics():
    gen = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(256, 3, generator=gen) + 0.5, torch.randn(256, 3, generator=gen)
    state = torch.get_rng_state()
    ens = rm.train_ensemble(lambda: rm.RewardMLP(3, (8,)), chosen, rejected, seeds=[0, 1, 2], steps=20, batch_size=64)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    pool = torch.randn(500, 3, generator=gen)
    raw = ens.member_scores(pool)
    assert raw.shape == (3, 500) and not torch.allclose(raw[0], raw[1])
    torch.testing.assert_close(ens.score(pool, "uwo", lam=0.5), rm.combine(rm.standardise(raw), "uwo", 0.5))
    ens.fit_standardisation(pool)
    few = pool[:5]
    torch.testing.assert_close(ens.score(few, "wco"), rm.standardise(raw[:, :5], raw.mean(1), raw.std(1)).min(0).values)


def test_sequence_reward_model_scores_prompt_and_response():
    torch.manual_seed(0)
    model = rm.SequenceRewardModel(lm.TinyLM(5, 6, d_model=16))
    x, y = torch.zeros(8, 2, dtype=torch.long), torch.randint(5, (8, 4))
    assert model(x, y).shape == (8,) and torch.equal(model((x, y)), model(x, y))
    gen = torch.Generator().manual_seed(0)
    good, bad = torch.ones(64, 4, dtype=torch.long), torch.randint(2, 5, (64, 4), generator=gen)
    xs = torch.zeros(64, 2, dtype=torch.long)
    losses = rm.train_reward_model(model, (xs, good), (xs, bad), steps=30, lr=1e-2, batch_size=32, generator=gen)
    assert losses[-1] < 0.5 * losses[0]

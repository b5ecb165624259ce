"""LOL (18): the decoding rules on hand-made logits, early exit, the fact world, MC1/MC2, the claims, divergence,
and quick runs."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import labkit.core.params as params_module
from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.core.store import RunStore
from labkit.data import facts
from labkit.methods import lol_decoding as lol
from labkit.methods.lol_decoding import experiment as X
from labkit.models.tiny_lm import TinyLM

T = torch.tensor
LOG = math.log


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


def logs(*probs):
    """A (1, V) row of log-probabilities."""
    return torch.log(T([probs], dtype=torch.float64))


# the original model's final layer, the amateur's final layer (4 tokens)
P_M = (0.5, 0.3, 0.04, 0.16)
P_A = (0.7, 0.1, 0.1, 0.1)


# --- the plausibility constraint and the contrasts ------------------------------------------------------


def test_plausible_head_keeps_tokens_within_beta_of_the_best():
    # β = 0.1: the bar is 0.1·0.5 = 0.05, so 0.04 falls out; β = 0.5: the bar is 0.25
    assert lol.plausible_head(logs(*P_M), 0.1).tolist() == [[True, True, False, True]]
    assert lol.plausible_head(logs(*P_M), 0.5).tolist() == [[True, True, False, False]]
    assert lol.plausible_head(logs(*P_M), 0.0).all()  # β = 0: the constraint is off
    assert lol.plausible_head(logs(*P_M), 1.0).tolist() == [[True, False, False, False]]


def test_plausible_head_is_transformers_min_p_filter():
    transformers = pytest.importorskip("transformers")
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(0)) * 3
    for beta in (0.05, 0.1, 0.3):
        warper = transformers.generation.logits_process.MinPLogitsWarper(min_p=beta)
        kept = torch.isfinite(warper(torch.zeros(5, 1, dtype=torch.long), logits.clone()))
        assert torch.equal(lol.plausible_head(logits.log_softmax(-1), beta), kept)


def test_contrast_is_one_plus_alpha_expert_minus_alpha_amateur():
    got = lol.contrast(logs(*P_M), logs(*P_A), alpha=0.5)
    want = [1.5 * LOG(m) - 0.5 * LOG(a) for m, a in zip(P_M, P_A)]
    assert got[0].tolist() == pytest.approx(want)
    assert torch.equal(lol.contrast(logs(*P_M), logs(*P_A), alpha=0.0), logs(*P_M))  # α = 0: the expert alone


def test_cd_is_expert_minus_amateur_on_the_head():
    scores = lol.cd_scores(logs(*P_M), logs(0.25, 0.25, 0.25, 0.25), beta_apc=0.1)
    assert scores[0].tolist() == pytest.approx([LOG(2.0), LOG(1.2), lol.MASKED, LOG(0.64)])


def test_icd_penalises_what_the_amateur_likes():
    # α = 1: s = 2·log q_M − log q_A. Greedy picks token 0 (0.5), the amateur's favourite (0.7); ICD picks token 1
    scores = lol.icd_scores(logs(*P_M), logs(*P_A), alpha=1.0, beta_apc=0.1)
    want = [2 * LOG(0.5) - LOG(0.7), 2 * LOG(0.3) - LOG(0.1), lol.MASKED, 2 * LOG(0.16) - LOG(0.1)]
    assert scores[0].tolist() == pytest.approx(want)
    assert int(scores.argmax()) == 1 and int(logs(*P_M).argmax()) == 0


def test_apc_keeps_a_junk_token_out_even_when_the_contrast_loves_it():
    # token 2 is implausible for the model (0.04 < 0.1·0.5) and the amateur hates it: the raw contrast would pick it
    amateur = logs(0.5, 0.3, 1e-6, 0.2)
    raw = lol.contrast(logs(*P_M), amateur, alpha=1.0)
    assert int(raw.argmax()) == 2
    assert int(lol.icd_scores(logs(*P_M), amateur, alpha=1.0, beta_apc=0.1).argmax()) != 2


def test_lol_fuses_the_lower_layer_contrast_with_weight_omega():
    lower_m, lower_a = (0.1, 0.1, 0.1, 0.7), (0.25, 0.25, 0.25, 0.25)
    args = (logs(*P_M), logs(*lower_m), logs(*P_A), logs(*lower_a))
    for omega in (0.0, 1.0):
        scores = lol.lol_scores(*args, alpha=1.0, omega=omega, beta_apc=0.1)
        want = [
            (2 * LOG(m) - LOG(a)) + omega * (2 * LOG(lm) - LOG(la)) for m, a, lm, la in zip(P_M, P_A, lower_m, lower_a)
        ]
        want[2] = lol.MASKED  # outside V_head of the (refocused) final layer, whatever the lower layer says
        assert scores[0].tolist() == pytest.approx(want)
    # ω = 0 is ICD on the same inputs; ω = 1 lets the lower layer's preference for token 3 win
    assert torch.equal(
        lol.lol_scores(*args, alpha=1.0, omega=0.0, beta_apc=0.1),
        lol.icd_scores(logs(*P_M), logs(*P_A), alpha=1.0, beta_apc=0.1),
    )
    assert int(lol.lol_scores(*args, alpha=1.0, omega=0.0, beta_apc=0.1).argmax()) == 1
    assert int(lol.lol_scores(*args, alpha=1.0, omega=1.0, beta_apc=0.1).argmax()) == 3


def test_jsd_by_hand():
    assert float(lol.jsd(logs(1.0, 0.0), logs(0.0, 1.0))) == pytest.approx(LOG(2.0))
    assert float(lol.jsd(logs(0.5, 0.5), logs(0.5, 0.5))) == pytest.approx(0.0, abs=1e-12)
    kl = 0.75 * LOG(1.5) + 0.25 * LOG(0.5)  # KL((¾, ¼) ‖ (½, ½)), the same for the mirror image
    assert float(lol.jsd(logs(0.75, 0.25), logs(0.25, 0.75))) == pytest.approx(kl)
    assert float(lol.jsd(logs(0.9, 0.1), logs(0.2, 0.8))) == pytest.approx(
        float(lol.jsd(logs(0.2, 0.8), logs(0.9, 0.1)))
    )


def test_dola_contrasts_each_row_with_its_most_different_layer():
    uniform = (0.25, 0.25, 0.25, 0.25)
    final = torch.cat([logs(*P_M), logs(*uniform)])  # (2, 4)
    candidates = torch.stack([torch.cat([logs(*P_M), logs(*P_A)]), torch.cat([logs(*uniform), logs(*uniform)])])
    scores, chosen = lol.dola_scores(final, candidates, beta_apc=0.1)
    assert chosen.tolist() == [1, 0]  # row 0 differs from layer 1 only, row 1 from layer 0 only
    assert scores[0].tolist() == pytest.approx([LOG(2.0), LOG(1.2), lol.MASKED, LOG(0.64)])
    assert scores[1].tolist() == pytest.approx([LOG(0.25 / p) for p in P_A])  # uniform final: every token plausible


# --- early exit, refocusing, the decoding loop -----------------------------------------------------------


def tiny_model(seed=0, vocab=9, layers=3):
    torch.manual_seed(seed)
    model = TinyLM(vocab, 6, d_model=8, n_layers=layers, n_heads=2)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


def test_early_exit_goes_through_the_final_layernorm():
    model, tokens = tiny_model(), T([[1, 4, 3], [1, 7, 3]])
    out = lol.early_exit_logprobs(model, tokens, [3, 0, 1])
    assert out.shape == (3, 2, 9)
    with torch.no_grad():
        assert torch.allclose(out[0], model(tokens)[:, -1].log_softmax(-1), atol=1e-6)  # j = L: the model's output
        h0 = model.tok(tokens) + model.pos(torch.arange(3))
        assert torch.allclose(out[1], model.head(model.ln_f(h0[:, -1])).log_softmax(-1), atol=1e-6)
        h1 = model.blocks[0](h0)
        assert torch.allclose(out[2], model.head(model.ln_f(h1[:, -1])).log_softmax(-1), atol=1e-6)
        assert not torch.allclose(out[2], model.head(h1[:, -1]).log_softmax(-1), atol=1e-3)  # raw state ≠ early exit
    with pytest.raises(ValueError, match="layers"):
        lol.early_exit_logprobs(model, tokens, [4])


def test_refocus_puts_the_instruction_after_bos():
    world = facts.make_fact_world(n_entities=5, n_values=6, n_popular=3, seed=1)
    x = facts.prompts(world, torch.arange(5))
    refocused = lol.refocus(x, T(lol.INSTRUCTION))
    assert refocused[0].tolist() == [facts.FactVocab.BOS, facts.FactVocab.FACT, world.vocab.entity(0), 3]
    assert torch.equal(refocused, facts.prompts(world, torch.arange(5), refocus=True))


def test_lol_step_and_generate_take_the_argmax_of_the_fused_score():
    model, amateur = tiny_model(0), tiny_model(1)
    x, instr = T([[1, 4, 3], [1, 6, 3]]), T([2])
    knobs = {"layer": 1, "alpha": 1.0, "omega": 0.5, "beta_apc": 0.1}
    got = lol.lol_step(model, amateur, x, instr, **knobs)
    m = lol.early_exit_logprobs(model, lol.refocus(x, instr), [3, 1])
    a = lol.early_exit_logprobs(amateur, x, [3, 1])
    assert torch.allclose(got, lol.lol_scores(m[0], m[1], a[0], a[1], 1.0, 0.5, 0.1))
    out = lol.lol_generate(model, amateur, x, 2, instr, **knobs)
    assert out.shape == (2, 2) and out[:, 0].tolist() == got.argmax(-1).tolist()
    second = lol.lol_step(model, amateur, torch.cat([x, out[:, :1]], 1), instr, **knobs).argmax(-1)
    assert out[:, 1].tolist() == second.tolist()  # the chosen token is fed back to both models


# --- training and the induce step -----------------------------------------------------------------------


def test_answer_nll_scores_only_the_value_token():
    model = tiny_model(vocab=9)
    tokens, pos = T([[1, 4, 3, 7, 0], [1, 2, 5, 3, 8]]), T([3, 4])
    with torch.no_grad():
        logits = model(tokens)
        want = F.cross_entropy(logits[[0, 1], [2, 3]], T([7, 8]))
        assert float(lol.answer_nll(model, tokens, pos)) == pytest.approx(float(want), abs=1e-6)


def test_induce_amateur_leaves_the_original_alone_and_raises_the_misconception():
    world = facts.make_fact_world(n_entities=20, n_values=8, n_popular=3, seed=0)
    model = TinyLM(world.vocab.size, facts.SEQ_LEN, d_model=16, n_layers=2, n_heads=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    false = facts.false_statements(world)
    gen = torch.Generator().manual_seed(0)
    amateur = lol.induce_amateur(
        model, false.tokens, false.answer_pos, steps=30, lr=3e-3, batch_size=20, generator=gen, series="induce"
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x, m = facts.prompts(world, torch.arange(20)), world.vocab.value(world.misconception)
    with torch.no_grad():
        p_model = model(x)[:, -1].softmax(-1).gather(1, m[:, None])
        p_amateur = amateur(x)[:, -1].softmax(-1).gather(1, m[:, None])
    assert float(p_amateur.mean()) > float(p_model.mean()) + 0.1


def test_a_huge_learning_rate_diverges_naming_the_series():
    world = facts.make_fact_world(n_entities=20, n_values=8, n_popular=3, seed=0)
    corpus = facts.fact_corpus(world)
    model = TinyLM(world.vocab.size, facts.SEQ_LEN, d_model=16, n_layers=2, n_heads=4)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(DivergenceError, match=r"at step \d+ in 'original seed 0'"):
        lol.fit_answers(
            model, corpus.tokens, corpus.answer_pos, steps=50, lr=1e12, batch_size=16, generator=gen,
            series="original seed 0",
        )  # fmt: skip


@pytest.fixture
def without_range_checks(monkeypatch):
    """Values are still parsed and type-checked; only the [low, high] range is lifted (as tests/test_divergence)."""
    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))


@pytest.mark.parametrize(
    ("overrides", "series"),
    [({"lr": 1e12}, "original seed 0"), ({"amateur_lr": 1e12, "amateur_steps": 30}, "induced amateur seed 0")],
)
def test_a_diverging_run_stops_and_records_nothing(overrides, series, without_range_checks, tmp_path, monkeypatch):
    path = tmp_path / "runs.sqlite"
    monkeypatch.setenv("LABKIT_STORE", str(path))
    small = {"n_entities": 40, "steps": 40, "n_seeds": 1}
    with pytest.raises(DivergenceError, match=rf"at step \d+ in {re.escape(repr(series))}"):
        lol.run(progress=False, record=True, **(small | overrides))
    assert len(RunStore(path).runs()) == 0


# --- the fact world ---------------------------------------------------------------------------------------


def test_fact_world_counts_and_ranges():
    world = facts.make_fact_world(n_entities=400, n_values=30, n_popular=5, zipf_s=1.5, max_count=20, seed=3)
    v = world.vocab
    assert v.size == 4 + 30 + 400 and v.first_value == 4 and v.first_entity == 34
    assert (world.misconception != world.true_value).all()
    assert (world.misconception < 5).all() and (world.true_value < 30).all()
    assert set(world.misconception.tolist()) == set(range(5))
    assert int(world.count.min()) >= 1 and int(world.count.max()) <= 20
    share = facts.zipf_probs(20, 1.5)[:2].sum().item()  # P(n ≤ 2) ≈ 0.60
    assert abs(float(world.rare.float().mean()) - share) < 0.08
    again = facts.make_fact_world(n_entities=400, n_values=30, n_popular=5, zipf_s=1.5, max_count=20, seed=3)
    assert torch.equal(again.true_value, world.true_value) and torch.equal(again.count, world.count)
    assert facts.zipf_probs(3, 1.0).tolist() == pytest.approx([6 / 11, 3 / 11, 2 / 11])


def test_fact_corpus_counts_and_tags():
    world = facts.make_fact_world(n_entities=200, seed=0)
    corpus = facts.fact_corpus(world, false_repeats=2, fact_frac=0.5, seed=0)
    assert int(corpus.true.sum()) == int(world.count.sum())
    assert int((~corpus.true).sum()) == 2 * 200
    assert not bool(corpus.tagged[~corpus.true].any())  # false statements are never tagged
    assert abs(float(corpus.tagged[corpus.true].float().mean()) - 0.5) < 0.06
    per_entity = torch.bincount(corpus.entity[corpus.true], minlength=200)
    assert torch.equal(per_entity, world.count)
    # every sentence reads "[BOS] ([FACT]) e is v", the value at answer_pos and the right value for its kind
    v, rows = world.vocab, torch.arange(len(corpus))
    values = corpus.tokens[rows, corpus.answer_pos] - v.first_value
    truth = torch.where(corpus.true, world.true_value[corpus.entity], world.misconception[corpus.entity])
    assert torch.equal(values, truth)
    assert (corpus.tokens[:, 0] == v.BOS).all() and (corpus.tokens[corpus.tagged, 1] == v.FACT).all()
    assert (corpus.tokens[corpus.answer_pos == 3, 4] == v.PAD).all()
    one = facts.make_fact_world(n_entities=1, n_values=6, n_popular=3, seed=0)
    s = facts.fact_corpus(one, false_repeats=1, fact_frac=1.0)
    e, t, m = one.vocab.entity(0), one.vocab.value(int(one.true_value[0])), one.vocab.value(int(one.misconception[0]))
    assert s.tokens[0].tolist() == [1, 2, e, 3, t] and s.tokens[-1].tolist() == [1, e, 3, m, 0]


def test_rare_entities_see_the_misconception_at_least_as_often():
    world = facts.make_fact_world(n_entities=300, seed=1)
    corpus = facts.fact_corpus(world, false_repeats=2)
    for e in torch.nonzero(world.rare).flatten()[:20].tolist():
        sel = corpus.entity == e
        assert int((sel & ~corpus.true).sum()) >= int((sel & corpus.true).sum())


def test_candidates_and_split():
    world = facts.make_fact_world(n_entities=50, n_values=10, n_popular=4, seed=2)
    ent = torch.arange(50)
    cand = facts.mc_candidates(world, ent, n_random=3, seed=0)
    assert cand.shape == (50, 5)
    assert torch.equal(cand[:, 0], world.vocab.value(world.true_value))
    assert torch.equal(cand[:, 1], world.vocab.value(world.misconception))
    assert all(len(set(row)) == 5 for row in cand.tolist())
    assert ((cand >= world.vocab.first_value) & (cand < world.vocab.first_entity)).all()
    val, test = facts.split_entities(50, 1 / 3, seed=0)
    assert len(val) == 17 and len(test) == 33 and sorted(val.tolist() + test.tolist()) == list(range(50))
    with pytest.raises(ValueError, match="n_random"):
        facts.mc_candidates(world, ent, n_random=9)


# --- MC1 / MC2 -------------------------------------------------------------------------------------------


def test_mc1_and_mc2_by_hand():
    cand = T([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert lol.mc1(cand).tolist() == [1.0, 0.0, 0.0]  # a tie with a false answer counts as wrong
    e = math.e
    want = [e**2 / (e**2 + e + 1), 1 / (2 + math.exp(-1)), 1 / (1 + e**3 + e)]
    assert lol.mc2(cand).tolist() == pytest.approx(want)
    masked = T([[lol.MASKED, lol.MASKED, lol.MASKED]])  # every answer outside V_head: a tie, MC2 uniform
    assert lol.mc1(masked).tolist() == [0.0] and lol.mc2(masked).tolist() == pytest.approx([1 / 3])


def test_accuracy_on_hand_made_questions():
    scores = torch.log(T([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]]))  # 3 entities, 3 tokens
    q = X.Questions(
        entities=T([0, 1, 2]),
        candidates=T([[1, 0], [2, 0], [2, 1]]),  # the true token first
        truth=T([1, 2, 2]),
        rare=T([True, True, False]),
        count=T([1, 2, 5]),
    )
    acc = X.accuracy(scores, q)
    assert acc.mc1_rare == pytest.approx(0.5) and acc.mc1_all == pytest.approx(2 / 3)
    assert acc.gen_rare == pytest.approx(0.5) and acc.gen_all == pytest.approx(2 / 3)  # entity 1 answers token 0
    assert acc.mc2_rare == pytest.approx((0.6 / 0.7 + 0.3 / 0.8) / 2)


# --- the decoders and the choice on validation --------------------------------------------------------------


def random_log_probs(n_entities=6, vocab=5, layers=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def stack():
        return torch.randn(layers + 1, n_entities, vocab, generator=g).log_softmax(-1)

    return X.LogProbs(stack(), stack(), stack(), torch.randn(n_entities, vocab, generator=g).log_softmax(-1))


def test_ablations_are_lol_with_one_part_removed():
    lp, s = random_log_probs(), X.Setting(alpha=1.0, omega=0.5, layer=1, beta_apc=0.1)
    no_lower = X.arm_scores(lp, X.NO_LOWER, s)
    assert torch.equal(no_lower, X.arm_scores(lp, X.LOL, X.Setting(1.0, 0.0, 1, 0.1)))
    plain = X.lol.lol_scores(lp.model[3], lp.model[1], lp.amateur[3], lp.amateur[1], 1.0, 0.5, 0.1)
    assert torch.equal(X.arm_scores(lp, X.NO_REFOCUS, s), plain)
    assert torch.equal(X.arm_scores(lp, X.REFOCUS_ONLY, s), lp.refocused[3])
    assert torch.equal(X.arm_scores(lp, X.GREEDY, s), lp.model[3])
    assert torch.equal(X.arm_scores(lp, X.ICD, s), lol.icd_scores(lp.model[3], lp.amateur[3], 1.0, 0.1))


def test_choose_prefers_omega_zero_when_the_lower_layer_says_nothing():
    lp = random_log_probs(n_entities=8)
    flat = torch.full_like(lp.refocused[1], -math.log(5))  # uniform lower layers: F_ℓ is a constant, ω has no effect
    for stack in (lp.refocused, lp.amateur):
        stack[1:3] = flat
    val = X.Questions(T(range(8)), torch.randint(5, (8, 3), generator=torch.Generator().manual_seed(1)), T([0] * 8),
                      T([True] * 8), T([1] * 8))  # fmt: skip
    start = X.Setting(1.0, 0.5, 1, 0.1)
    chosen = X.choose(lp, val, X.LOL, start, tune=True)
    assert chosen.omega == 0.0 and chosen.layer == 1 and chosen.alpha in X.ALPHAS
    assert X.choose(lp, val, X.LOL, start, tune=False) == start
    assert X.choose(lp, val, X.GREEDY, start, tune=True) == start


# --- claims -------------------------------------------------------------------------------------------------


def test_headline_claim_three_ways():
    greedy, cd = [0.05, 0.04, 0.06], [0.2, 0.25, 0.22]
    holds = lol.headline_claim([0.9, 0.92, 0.95], greedy, cd)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == 0.0
    assert holds.values == pytest.approx((0.7, 0.67, 0.73))  # against the better of greedy and CD, per seed
    assert lol.headline_claim([0.1, 0.12, 0.11], greedy, cd).verdict is Verdict.DOES_NOT_HOLD
    assert lol.headline_claim([0.5, 0.0, 0.3], greedy, cd).verdict is Verdict.INCONCLUSIVE
    nan = lol.headline_claim([0.9, float("nan"), 0.95], greedy, cd)
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail


def test_supporting_claims_three_ways():
    greedy = [0.05, 0.04, 0.06]
    assert lol.lol_over_greedy_claim([0.9, 0.9, 0.9], greedy).verdict is Verdict.HOLDS
    assert lol.lol_over_greedy_claim([0.1, 0.12, 0.11], greedy).verdict is Verdict.DOES_NOT_HOLD  # + 0.06 < 0.15
    assert lol.lol_over_greedy_claim([0.5, 0.04, 0.2], greedy).verdict is Verdict.INCONCLUSIVE
    assert lol.icd_over_greedy_claim([0.45, 0.5, 0.48], greedy).verdict is Verdict.HOLDS
    assert lol.icd_over_greedy_claim([0.1, 0.09, 0.12], greedy).verdict is Verdict.DOES_NOT_HOLD
    assert lol.icd_over_greedy_claim([0.1, float("nan"), 0.5], greedy).verdict is Verdict.INCONCLUSIVE
    icd = [0.5, 0.5, 0.5]
    assert lol.lol_vs_icd_claim([0.49, 0.495, 0.5], icd).verdict is Verdict.HOLDS  # within 0.02
    assert lol.lol_vs_icd_claim([0.4, 0.41, 0.42], icd).verdict is Verdict.DOES_NOT_HOLD
    assert lol.lol_vs_icd_claim([0.3, 0.7, 0.5], icd).verdict is Verdict.INCONCLUSIVE
    assert lol.lol_over_greedy_claim([0.9], [0.05]).verdict is Verdict.HOLDS  # 1 seed: the point, said so
    assert "1 seed" in str(lol.lol_over_greedy_claim([0.9], [0.05]))


# --- knobs and runs -----------------------------------------------------------------------------------------


def test_bad_knobs_are_refused_before_any_work():
    with pytest.raises(ValueError, match="LOWER layer"):
        lol.run(layer=3)  # n_layers = 3 at quick: ℓ must be 1 or 2
    with pytest.raises(ValueError, match="small_layers"):
        lol.run(small_layers=3)
    with pytest.raises(ValueError, match="n_random"):
        lol.run(n_values=6, n_popular=5, n_random=5)
    with pytest.raises(ValueError, match="unknown parameter"):
        lol.run(omgea=1.0)
    with pytest.raises(ValueError, match="beta_apc"):
        lol.run(beta_apc=1.5)


def test_small_run_has_the_claims_the_arms_and_the_figures():
    result = lol.run(n_entities=60, steps=40, amateur_steps=5, n_seeds=3, progress=False)
    assert isinstance(result, Result) and result.headline is not None
    assert [c.headline for c in result.claims] == [True, False, False, False]
    assert all(math.isfinite(v) for k, v in result.metrics.items() if not k.startswith(("mc1_rare", "mc2_rare")))
    arms = {o.arm.key: o for o in result.extras["arms"]}
    assert set(arms) == {a.key for a in lol.ARMS} and all(len(o.mc1_rare) == 3 for o in arms.values())
    gap = np.array(arms["lol"].mc1_rare) - np.maximum(arms["greedy"].mc1_rare, arms["cd"].mc1_rare)
    assert result.claims[0].values == pytest.approx(tuple(gap), nan_ok=True)
    hist = result.history
    assert set(hist["metric"]) == {"nll"} and set(hist["seed"]) == {0, 1, 2}
    assert set(hist["series"]) == {"original", "CD amateur (1 layer)", "induced amateur"}
    assert {"mc1", "distributions", "sensitivity", "frequency", "layers", "nll"} <= set(result.figures)
    for choice in result.extras["choices"]:
        assert choice.lol.alpha in lol.ALPHAS and choice.lol.omega in lol.OMEGAS and choice.lol.layer in (1, 2)
        assert sum(choice.dola_layers) == pytest.approx(1.0)
    panels = result.extras["example"].panels
    assert len(panels) == 6 and all(sum(p) == pytest.approx(1.0, abs=1e-5) for _, p in panels)


@pytest.mark.slow
def test_quick_preset_shows_the_toy_claims():
    result = lol.run(progress=False)
    head, lol_greedy, icd_greedy, lol_icd = result.claims
    assert head.verdict is Verdict.HOLDS and icd_greedy.verdict is Verdict.HOLDS
    assert result.metrics["mc1_rare_greedy"] < 0.2  # the misconception wins on rare entities without help
    assert 0.0 < result.metrics["amateur_mc1_all"] < result.metrics["mc1_all_greedy"]  # worse, but not zero

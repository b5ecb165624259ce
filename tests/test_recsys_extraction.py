"""Few-shot recsys extraction (16): the losses against hand computations and torch's MarginRankingLoss, the world,
the recommenders' padding invariance, the black box, the generators, the claims, bad knobs, divergence, a run."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import labkit.core.params as params_module
from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.methods import recsys_extraction as rx
from labkit.substrates import sequential_recsys as sr

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


# --- the losses -----------------------------------------------------------------------------------------------


def test_ranking_loss_by_hand():
    scores = T([[0.0, 1.0, 2.0, 3.0, 4.0]])
    # order: max(0, s(3) − s(1) + 0.5) = 2.5 (one pair); above: mean(max(0, 4 − 1 + 0.5), max(0, 0 − 3 + 0.5)) = 1.75
    loss = rx.ranking_loss(scores, T([[1, 3]]), T([[4, 0]]), m1=0.5, m2=0.5)
    assert loss.item() == pytest.approx(2.5 + 1.75)


def test_ranking_loss_equals_torch_margin_ranking_loss():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 30, generator=gen)
    lists = torch.stack([torch.randperm(30, generator=gen)[:8] for _ in range(6)])
    negatives = rx.sample_negatives(lists, 30, gen)
    s_list, s_neg = scores.gather(1, lists), scores.gather(1, negatives)
    order = torch.nn.MarginRankingLoss(margin=0.5)(s_list[:, :-1].reshape(-1), s_list[:, 1:].reshape(-1),
                                                   torch.ones(6 * 7))  # fmt: skip
    above = torch.nn.MarginRankingLoss(margin=0.3)(s_list.reshape(-1), s_neg.reshape(-1), torch.ones(6 * 8))
    assert rx.ranking_loss(scores, lists, negatives, 0.5, 0.3).item() == pytest.approx((order + above).item(), 1e-6)


def test_repair_loss_on_a_hand_built_pair_of_lists():
    scores = T([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]], requires_grad=True)  # surrogate top-2: {0, 1}
    victim = T([[2, 5, 0]])  # victim top-2: {2, 5}
    # missed {2, 5} vs s_(2) = 4: (4 − 3 + .5) + (4 − 0 + .5) = 6; intruders {0, 1} vs s(v_2) = s(5) = 0:
    # (5 − 0 + .5) + (4 − 0 + .5) = 10; L_BR = (6 + 10) / K = 8
    loss = rx.repair_loss(scores, victim, k=2, margin=0.5)
    assert loss.item() == pytest.approx(8.0)
    loss.backward()
    # missed items are pulled up, intruders pushed down, the rest (and the thresholds) get no gradient
    assert scores.grad[0].tolist() == pytest.approx([0.5, 0.5, -0.5, 0.0, 0.0, -0.5])


def test_repair_loss_is_zero_when_the_top_k_agree_and_only_margins_count():
    scores = T([[5.0, 4.0, 3.0, 2.0]])
    assert rx.repair_loss(scores, T([[1, 0, 3]]), k=2, margin=0.5).item() == 0.0  # same set, other order
    # one swap at the border: missed item 2 (3.0) vs s_(2) = 4 → 1.5; intruder 1 (4.0) vs s(v_2) = s(2) = 3 → 1.5
    assert rx.repair_loss(scores, T([[0, 2]]), k=2, margin=0.5).item() == pytest.approx((1.5 + 1.5) / 2)


def test_extraction_loss_adds_lambda_times_repair():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 20, generator=gen)
    lists = torch.stack([torch.randperm(20, generator=gen)[:6] for _ in range(4)])
    neg = rx.sample_negatives(lists, 20, gen)
    base = rx.ranking_loss(scores, lists, neg)
    both = rx.extraction_loss(scores, lists, neg, lam=2.0, repair_k=3)
    assert both.item() == pytest.approx(base.item() + 2.0 * rx.repair_loss(scores, lists, 3).item(), 1e-6)
    assert rx.extraction_loss(scores, lists, neg, lam=0.0, repair_k=3).item() == pytest.approx(base.item())


def test_negatives_avoid_the_list_and_padding():
    gen = torch.Generator().manual_seed(2)
    lists = T([[0, 1, 2, 3], [4, 5, 6, 7]])
    neg = rx.sample_negatives(lists, 10, gen)
    assert neg.shape == (2, 4) and int(neg.max()) < 10  # 10 would be the pad id
    for row, banned in zip(neg.tolist(), lists.tolist()):
        assert not set(row) & set(banned)


def test_gate_targets_by_hand():
    seqs = T([[1, 2, 3], [4, 5, 6]])
    lists = T([[[2, 9], [0, 9]], [[9, 8], [6, 1]]])  # next items: (2, 3) and (5, 6)
    assert rx.gate_targets(seqs, lists).tolist() == [[1.0, 0.0], [0.0, 1.0]]


# --- the world, the models, the black box ----------------------------------------------------------------------


def test_interactions_follow_the_card():
    world = sr.make_interactions(60, 6, 3000, 10, seed=3, stay=0.7, drift=0.0)
    again = sr.make_interactions(60, 6, 3000, 10, seed=3, stay=0.7, drift=0.0)
    assert torch.equal(world.sequences, again.sequences) and world.sequences.shape == (3000, 10)
    assert int(world.sequences.min()) >= 0 and int(world.sequences.max()) < 60
    assert torch.bincount(world.cluster_of).tolist() == [10] * 6
    assert world.popularity.sum().item() == pytest.approx(1.0, abs=1e-5)
    clusters = world.cluster_of[world.sequences]
    assert (clusters[:, 1:] == clusters[:, :-1]).float().mean().item() == pytest.approx(0.7, abs=0.02)
    # the ranks are a permutation of 1..I, weights r^−a
    pop = np.sort(world.popularity.numpy())[::-1]
    assert pop[0] / pop[1] == pytest.approx(2.0, rel=1e-4)


@pytest.mark.parametrize("arch", ["sasrec", "gru"])
def test_prefix_scores_ignore_padding_and_match_all_positions(arch):
    torch.manual_seed(0)
    model = sr.make_recommender(arch, 15, 8, max_len=6).eval()
    seq = T([[3, 1, 4, 1, 5]])
    pad = model.n_items
    with torch.no_grad():
        full = model(seq)  # [1, 5, 15]
        padded = sr.last_scores(model, sr.left_pad([seq[0, :3]], 5, pad))
    assert full.shape == (1, 5, 15)
    assert torch.allclose(full[0, 2], padded[0], atol=1e-5)


def test_prefixes_of_lists_every_proper_prefix():
    prefixes, targets = sr.prefixes_of(T([[7, 8, 9]]), pad=10)
    assert prefixes.tolist() == [[10, 7], [7, 8]] and targets.tolist() == [8, 9]


def test_black_box_returns_only_the_top_k_and_counts_queries():
    torch.manual_seed(0)
    model = sr.make_recommender("sasrec", 12, 8, max_len=5).eval()
    box = sr.BlackBox(model, k=4)
    seqs = torch.randint(0, 12, (3, 5))
    lists = box.query_sequences(seqs)
    assert lists.shape == (3, 4, 4) and box.n_queries == 12
    one = box.query(seqs[:, :3])
    assert box.n_queries == 15 and torch.equal(one, lists[:, 2])
    with torch.no_grad():
        scores = model(seqs)[:, 2]
    assert torch.equal(one, torch.sort(scores, dim=1, descending=True).indices[:, :4])
    with pytest.raises(ValueError, match="k=13"):
        sr.BlackBox(model, k=13)


def test_generators_stay_in_the_list_when_they_must_and_count_queries():
    torch.manual_seed(0)
    victim = sr.make_recommender("sasrec", 30, 8, max_len=6).eval()
    gen = torch.Generator().manual_seed(0)
    box = sr.BlackBox(victim, k=5)
    seqs, lists = rx.generate_data_free(box, 7, 6, gen)
    assert seqs.shape == (7, 6) and lists.shape == (7, 5, 5) and box.n_queries == 7 * 5
    assert (lists == seqs[:, 1:].unsqueeze(-1)).any(-1).all()  # every next item came from the list
    sampler = rx.GatedSampler(30, 8, 6).eval()
    box = sr.BlackBox(victim, k=5)
    seqs, lists = rx.generate_augmented(sampler, box, T([1, 2, 3]), 6, gen, use_gate=False)  # ρ ≡ 1
    assert (lists == seqs[:, 1:].unsqueeze(-1)).any(-1).all() and seqs[:, 0].tolist() == [1, 2, 3]
    assert torch.equal(lists, sr.BlackBox(victim, k=5).query_sequences(seqs))  # the lists are the victim's
    with torch.no_grad():
        sampler.gate.bias.fill_(-50.0)  # ρ ≈ 0: draws from P_φ over all items leave the list
    seqs, lists = rx.generate_augmented(sampler, sr.BlackBox(victim, k=5), T([1] * 40), 6, gen)
    assert not (lists == seqs[:, 1:].unsqueeze(-1)).any(-1).all()


def test_sampler_learns_its_gate_and_the_next_item():
    torch.manual_seed(0)
    seqs = T([[0, 1, 2, 3]] * 16)
    lists = T([[[1, 5], [9, 8], [3, 7]]] * 16)  # in list, not, in list
    sampler = rx.GatedSampler(10, 8, 4)
    before = rx.sampler_loss(sampler, seqs, rx.gate_targets(seqs, lists)).item()
    gen = torch.Generator().manual_seed(0)
    rx.train_sampler(sampler, seqs, lists, epochs=60, lr=0.03, batch_size=16, generator=gen)
    after = rx.sampler_loss(sampler, seqs, rx.gate_targets(seqs, lists)).item()
    assert after < 0.2 * before
    logits, gate = sampler(seqs[:1])
    assert logits[0, :3].argmax(-1).tolist() == [1, 2, 3]
    assert (torch.sigmoid(gate[0, :3]) > 0.5).tolist() == [True, False, True]


# --- the claims ---------------------------------------------------------------------------------------------


def test_headline_claim_three_ways():
    free = [0.70, 0.72, 0.71]
    holds = rx.headline_claim([0.80, 0.81, 0.79], free, 0.1)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == rx.HEADLINE_MARGIN == 0.03
    assert rx.headline_claim([0.71, 0.73, 0.72], free, 0.1).verdict is Verdict.DOES_NOT_HOLD  # +0.01 < 0.03
    assert rx.headline_claim([0.9, 0.6, 0.8], free, 0.1).verdict is Verdict.INCONCLUSIVE
    nan = rx.headline_claim([0.8, float("nan"), 0.8], free, 0.1)
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail


def test_few_shot_claim_three_ways():
    few = [0.5, 0.52, 0.51]
    claim = rx.few_shot_claim([0.8, 0.81, 0.82], few, 0.1)
    assert claim.verdict is Verdict.HOLDS and not claim.headline
    assert rx.few_shot_claim([0.4, 0.41, 0.42], few, 0.1).verdict is Verdict.DOES_NOT_HOLD
    assert rx.few_shot_claim([0.9, 0.2, 0.6], few, 0.1).verdict is Verdict.INCONCLUSIVE
    assert rx.few_shot_claim([0.9, 0.9, math.nan], few, 0.1).verdict is Verdict.INCONCLUSIVE


# --- knobs, plan, divergence, the run ----------------------------------------------------------------------


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="repair_k"):
        rx.run(repair_k=30, top_k=20)
    with pytest.raises(ValueError, match="fill the smallest budget"):
        rx.run(few_shot_frac=0.5, budget_seqs=100)
    with pytest.raises(ValueError, match="n_test_users"):
        rx.run(n_test_users=300, n_users=200)
    with pytest.raises(ValueError, match="unknown parameter"):
        rx.run(lambda_=1.0)


def test_plan_runs_every_arm_at_the_claims_fraction():
    jobs = rx.plan(rx.Knobs(ablations=True, sweep_budgets=True))
    head = {j.arm.key for j in jobs if j.headline}
    assert head == {a.key for a in rx.ARMS}
    fractions = {round(j.fraction, 4) for j in jobs if j.arm.key == "proposed"}
    assert fractions == {0.025, 0.05, 0.1}
    assert {j.budget for j in jobs if j.arm.key == "data_free"} == set(rx.BUDGETS)


SMALL = dict(
    n_items=40, n_clusters=4, n_users=300, n_test_users=40, seq_len=6, budget_seqs=60, top_k=10, victim_epochs=2,
    sampler_epochs=2, distill_epochs=2, log_every=1, progress=False,
)  # fmt: skip


def test_a_huge_learning_rate_diverges_naming_the_series(monkeypatch):
    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))
    with pytest.raises(DivergenceError, match=r"at step \d+ in 'victim seed 0'"):
        rx.run(lr=1e12, n_seeds=1, **SMALL)
    # the distillation loop itself, through the same check the run uses
    torch.manual_seed(0)
    surrogate = sr.make_recommender("sasrec", 20, 8, 5)
    seqs = torch.randint(0, 20, (8, 5))
    lists = torch.stack([torch.randperm(20)[:4] for _ in range(32)]).view(8, 4, 4)

    def on_step(step, loss, model):
        from labkit.core import check_finite, check_weights

        check_finite(loss, step, "proposed")
        check_weights(model, step, "proposed")

    with pytest.raises(DivergenceError, match=r"in 'proposed'"):
        rx.distill(surrogate, seqs, lists, lam=1.0, repair_k=3, margin=0.5, epochs=3, lr=1e12, batch_size=4,
                   generator=torch.Generator().manual_seed(0), on_step=on_step)  # fmt: skip


def test_small_run_has_the_claims_equal_budgets_and_real_prefix_agreement():
    result = rx.run(n_seeds=3, **SMALL)
    assert isinstance(result, Result) and result.claims[0].headline and len(result.claims) == 2
    assert all(math.isfinite(v) for v in result.metrics.values())
    rows = result.extras["results"]
    budget = SMALL["budget_seqs"] * (SMALL["seq_len"] - 1)
    for r in rows:
        if r.arm.key in ("proposed", "no_repair", "data_free"):
            assert r.queries == budget  # equal budgets, counted by the black box
        if r.arm.key == "few_shot":
            assert r.queries == rx.experiment.few_shot_count(r.fraction, 260) * (SMALL["seq_len"] - 1)
        assert 0.0 <= r.score.agreement_k <= 1.0
    proposed = rx.experiment.select(rows, rx.PROPOSED, 0.1)
    free = rx.experiment.select(rows, rx.DATA_FREE)
    assert result.claims[0].values == pytest.approx(tuple(np.array(proposed) - np.array(free)))
    assert set(result.history["metric"]) == {"agreement_at_10"} and set(result.history["seed"]) == {0, 1, 2}
    assert [v.agreement_k for v in result.extras["victims"]] == [1.0, 1.0, 1.0]  # the victim agrees with itself
    assert {"curves", "arms", "fractions", "popularity", "example"} <= set(result.figures)


def test_ablations_and_budget_sweep_spend_the_budget_they_are_given():
    result = rx.run(n_seeds=1, ablations=True, sweep_budgets=True, sweep_fractions=False, **SMALL)
    queries = {(r.arm.key, r.budget): r.queries for r in result.extras["results"]}
    per_seq = SMALL["seq_len"] - 1
    for key in ("no_sampler", "no_gate", "random", "proposed", "data_free"):
        assert queries[key, 1.0] == SMALL["budget_seqs"] * per_seq, key
    for budget in rx.BUDGETS:
        assert (
            queries["proposed", budget] == queries["data_free", budget] == int(SMALL["budget_seqs"] * budget) * per_seq
        )
    assert "budgets" in result.figures


def test_method_file_is_the_paper_only():
    source = (Path(rx.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2411.11677" in source
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment"):
        assert banned not in source

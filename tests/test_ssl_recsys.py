"""SSL recsys (30): the losses and the masks against hand computations, MI against sklearn, the catalogue, the stacked
two-tower, the claim logic, divergence and bad knobs, one small run."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import labkit.core.params as params_module
from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.methods import ssl_recsys as ssl
from labkit.substrates import recsys as rs
from labkit.substrates.ranking import ranking, recall_at_k

T = torch.tensor

#: a small problem that trains in a second or two
SMALL = dict(
    n_items=200,
    n_users=300,
    n_train=2000,
    n_val=200,
    n_test=500,
    n_steps=30,
    log_every=10,
    batch_size=32,
    ssl_batch_size=32,
    k=20,
    progress=False,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


# --- the losses -------------------------------------------------------------------------------------------------


def test_in_batch_softmax_with_logq_matches_hand_computation():
    q = T([[1.0, 0.0], [0.0, 1.0]])
    g = T([[1.0, 0.0], [0.6, 0.8]])
    log_q = torch.log(T([0.5, 0.25]))
    # row 0: s = (1/τ − log .5, 0.6/τ − log .25); row 1: (0 − log .5, 0.8/τ − log .25), τ = 0.5
    s0 = (2.0 + math.log(2), 1.2 + math.log(4))
    s1 = (0.0 + math.log(2), 1.6 + math.log(4))
    hand = -0.5 * (s0[0] - math.log(sum(map(math.exp, s0))) + s1[1] - math.log(sum(map(math.exp, s1))))
    assert ssl.in_batch_softmax_loss(q, g, log_q, 0.5).item() == pytest.approx(hand, abs=1e-6)
    # without the correction (log p equal for all) it is plain in-batch softmax cross-entropy
    plain = torch.nn.functional.cross_entropy(q @ g.T / 0.5, torch.arange(2))
    assert ssl.in_batch_softmax_loss(q, g, torch.zeros(2), 0.5).item() == pytest.approx(plain.item(), abs=1e-6)
    assert ssl.in_batch_softmax_loss(q, g, torch.full((2,), -3.0), 0.5).item() == pytest.approx(plain.item(), abs=1e-6)


def test_logq_correction_lowers_popular_negatives():
    """A popular in-batch item (large p_j) gets −log p_j small: it weighs less as a negative."""
    q, g = T([[1.0, 0.0], [0.0, 1.0]]), T([[0.0, 1.0], [1.0, 0.0]])  # every positive scores 0, every negative 1/τ
    popular_negatives = ssl.in_batch_softmax_loss(q, g, torch.log(T([0.9, 0.9])), 1.0)
    rare_negatives = ssl.in_batch_softmax_loss(q, g, torch.log(T([0.01, 0.01])), 1.0)
    assert popular_negatives.item() == pytest.approx(rare_negatives.item(), abs=1e-6)  # a constant shift cancels
    mixed = ssl.in_batch_softmax_loss(q, g, torch.log(T([0.9, 0.01])), 1.0)
    # row 0: positive item 0 (p=.9), negative item 1 (p=.01): logits (0 − log .9, 1 − log .01)
    r0 = -(-math.log(0.9) - math.log(math.exp(-math.log(0.9)) + math.exp(1 - math.log(0.01))))
    r1 = -(-math.log(0.01) - math.log(math.exp(1 - math.log(0.9)) + math.exp(-math.log(0.01))))
    assert mixed.item() == pytest.approx((r0 + r1) / 2, abs=1e-6)


def test_ssl_contrastive_loss_matches_hand_computation_and_batches():
    z = T([[1.0, 0.0], [0.0, 1.0]])
    zp = T([[0.8, 0.6], [0.0, 1.0]])
    # ⟨z_i, z'_j⟩/τ, τ = 0.5: row 0 = (1.6, 0), row 1 = (1.2, 2); the positives are on the diagonal
    hand = -0.5 * (1.6 - math.log(math.exp(1.6) + 1.0) + 2.0 - math.log(math.exp(1.2) + math.exp(2.0)))
    assert ssl.ssl_contrastive_loss(z, zp, 0.5).item() == pytest.approx(hand, abs=1e-6)
    stacked = ssl.ssl_contrastive_loss(torch.stack([z, zp]), torch.stack([zp, z]), 0.5)  # (M=2,)
    assert stacked.shape == (2,) and stacked[0].item() == pytest.approx(hand, abs=1e-6)
    assert ssl.multitask_loss(T([1.0, 2.0]), T([3.0, 3.0]), T([0.0, 0.5])).tolist() == [1.0, 3.5]


# --- mutual information and the masks ---------------------------------------------------------------------------


def test_mutual_information_by_hand_and_against_sklearn():
    from sklearn.metrics import mutual_info_score

    a = np.array([0, 0, 1, 1])
    assert ssl.mutual_information(a, a) == pytest.approx(math.log(2))
    assert ssl.mutual_information(a, np.array([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, 500)
    y = (x + rng.integers(0, 3, 500)) % 9
    assert ssl.mutual_information(x, y) == pytest.approx(mutual_info_score(x, y), abs=1e-10)
    table = rs.make_catalogue(300, np.random.default_rng(1)).features
    mi = ssl.mutual_information_matrix(table)
    assert mi.shape == (7, 7) and np.allclose(mi, mi.T)
    assert mi[3, 4] == pytest.approx(mutual_info_score(table[:, 3], table[:, 4]), abs=1e-10)


def test_cfm_mask_table_hand_case():
    # 4 fields: 0–1 strongly linked, 2–3 linked, 0–3 weakly; ⌊4/2⌋ − 1 = 1 partner per seed field
    mi = np.array([[9.0, 5.0, 0.1, 0.3], [5.0, 9.0, 0.2, 0.0], [0.1, 0.2, 9.0, 2.0], [0.3, 0.0, 2.0, 9.0]])
    table = ssl.cfm_mask_table(mi).int().tolist()
    assert table == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    # 7 fields: the seed field and the 2 fields with the highest MI with it
    mi7 = np.zeros((7, 7))
    mi7[2, [4, 6, 5]] = mi7[[4, 6, 5], 2] = [3.0, 2.0, 1.0]
    assert ssl.cfm_mask_table(mi7)[2].int().tolist() == [0, 0, 1, 0, 1, 0, 1]
    assert ssl.cfm_mask_table(mi7)[0].int().tolist() == [1, 1, 1, 0, 0, 0, 0]  # all-zero MI: ties to low index


def test_catalogue_mi_puts_correlated_fields_together():
    """On the item table, tier is a function of brand and subcategory of category: CFM masks them together."""
    features = rs.make_catalogue(2000, np.random.default_rng(0)).features
    table = ssl.cfm_mask_table(ssl.mutual_information_matrix(features))
    fields = rs.ITEM_FIELDS
    assert table[fields.index("tier"), fields.index("brand")]
    assert table[fields.index("category"), fields.index("subcategory")]
    assert table.sum(1).tolist() == [3] * 7


def test_random_masks_are_a_uniform_half_and_views_are_complementary():
    gen = torch.Generator().manual_seed(0)
    masks = ssl.random_feature_masks((4000,), 4, gen)
    assert masks.shape == (4000, 4) and (masks.sum(1) == 2).all()
    subsets, counts = torch.unique(masks.int(), dim=0, return_counts=True)
    assert len(subsets) == 6 and counts.min() > 4000 / 6 * 0.8  # every pair of fields, about equally often
    v1, v2 = ssl.complementary_views(ssl.random_feature_masks((3, 5), 7, gen))
    assert (v1 ^ v2).all()  # every field is masked in exactly one view
    assert (v1.sum(-1) == 3).all() and (v2.sum(-1) == 4).all()


def test_correlated_masks_follow_the_table_per_model():
    tables = torch.zeros(2, 4, 4, dtype=torch.bool)
    tables[0] = torch.eye(4, dtype=torch.bool) | torch.eye(4, dtype=torch.bool).roll(1, 1)
    tables[1] = torch.eye(4, dtype=torch.bool) | torch.eye(4, dtype=torch.bool).roll(2, 1)
    masks = ssl.correlated_feature_masks(tables, (2, 500), torch.Generator().manual_seed(0))
    assert masks.shape == (2, 500, 4)
    for m in range(2):
        rows = {tuple(r) for r in masks[m].int().tolist()}
        assert rows == {tuple(r) for r in tables[m].int().tolist()}  # every seed field drawn, only table rows
    v1, v2 = ssl.complementary_views(masks)
    assert not (v1 & v2).any() and (v1 | v2).all()


# --- the catalogue and the two-tower --------------------------------------------------------------------------


def test_catalogue_follows_the_card():
    cat = rs.make_catalogue(2000, np.random.default_rng(3))
    f = cat.features
    assert (f[:, 0] == np.arange(2000)).all() and (f.max(0) < np.array(cat.cardinalities)).all()
    assert (f[:, 4] == f[:, 3] % 5).all()  # tier = brand mod 5
    assert 0.85 < (f[:, 2] // 5 == f[:, 1]).mean() < 0.95  # subcategory from category, 10% noise
    assert 0.85 < (f[:, 5] // 2 == f[:, 4]).mean() < 0.95
    pop = np.sort(cat.popularity)[::-1]
    assert pop.sum() == pytest.approx(1.0) and pop[0] / pop[-1] == pytest.approx(2000**1.1, rel=1e-6)


def test_interactions_follow_the_preference_model():
    cat = rs.Catalogue(
        np.array([[0, 1, 5, 0, 0, 0, 1], [1, 2, 10, 0, 0, 9, 4]]), (2, 20, 100, 200, 5, 10, 30), np.array([0.5, 0.5])
    )
    users = rs.Users(np.array([[0, 1, 0, 1]]), (1, 20, 10, 30))
    # item 0: category, near price and style match: exp(2 + 1 + 1.5); item 1: nothing
    p0 = math.exp(4.5) / (math.exp(4.5) + 1.0)
    pairs = rs.sample_interactions(cat, users, 20_000, np.random.default_rng(0))
    assert (pairs[:, 0] == 0).all() and (pairs[:, 1] == 0).mean() == pytest.approx(p0, abs=0.005)
    data = rs.make_recsys_data(0, n_items=300, n_users=200, n_train=3000, n_val=10, n_test=10)
    tr = data.interactions.train
    match = data.catalogue.features[tr[:, 1], 1] == data.users.features[tr[:, 0], 1]
    assert match.mean() > 0.3  # far above the 1/20 of a random category


def test_buckets_and_log_sampling_probability():
    assert rs.frequency_buckets(np.array([0, 3, 4, 30, 31, 100])).tolist() == [0, 0, 1, 1, 2, 2]
    logq = rs.log_sampling_probability(np.array([0, 1, 2]))
    assert np.exp(logq).tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6])


def test_stacked_towers_are_separate_models_and_masks_zero_the_field():
    gen = torch.Generator().manual_seed(0)
    tower = rs.StackedTower((5, 3), n_models=2, emb_dim=4, hidden=8, out=3, generator=gen)
    fields = T([[[1, 2], [4, 0]], [[1, 2], [4, 0]]])
    out = tower(fields)
    assert out.shape == (2, 2, 3) and torch.allclose(out.norm(dim=-1), torch.ones(2, 2))
    out[0].sum().backward()  # model 0's loss
    assert tower.table.grad[1].abs().sum() == 0 and tower.w1.grad[1].abs().sum() == 0
    assert tower.table.grad[0].abs().sum() > 0
    # masking field 1 = zeroing its embedding
    masked = tower(fields, T([[[False, True]] * 2] * 2))
    with torch.no_grad():
        tower.table[:, 5 + 2] = 0.0
        tower.table[:, 5 + 0] = 0.0
    assert torch.allclose(masked, tower(fields), atol=1e-6)
    assert torch.allclose(tower(fields[1:], models=T([1])), tower(fields)[1:], atol=1e-6)


def test_common_random_numbers_keep_twin_models_identical():
    """Two models with the same weights, the same problem and α = 0 follow the same trajectory."""
    data = rs.make_recsys_data(0, n_items=50, n_users=40, n_train=300, n_val=10, n_test=10)
    gen = torch.Generator().manual_seed(0)
    model = rs.TwoTower(data.users.cardinalities, data.catalogue.cardinalities, 2, 4, 8, 4, gen)
    with torch.no_grad():
        for t in model.parameters():
            t[1] = t[0]
    two = lambda x, dtype=None: torch.as_tensor(x, dtype=dtype).unsqueeze(0).repeat(2, *[1] * np.ndim(x))  # noqa: E731
    table = ssl.cfm_mask_table(ssl.mutual_information_matrix(data.catalogue.features))
    losses = []
    ssl.train_two_towers(
        model,
        two(data.catalogue.features),
        two(data.users.features),
        two(data.interactions.train),
        two(rs.log_sampling_probability(data.train_counts()), torch.float32),
        table.unsqueeze(0).repeat(2, 1, 1),
        T([0.0, 0.0]),
        T([True, False]),
        n_steps=5,
        batch_size=16,
        ssl_batch_size=16,
        tau_main=0.1,
        tau_ssl=0.1,
        lr=1e-2,
        generator=gen,
        problem=T([0, 0]),
        on_step=lambda step, loss, main, self_sup: losses.append(loss),
    )
    assert len(losses) == 5 and all(torch.equal(x[0], x[1]) for x in losses)
    assert torch.equal(model.item.table[0], model.item.table[1])


def test_recall_matches_torchmetrics():
    from torchmetrics.retrieval import RetrievalRecall

    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(30, 40, generator=gen)  # continuous: no ties, where the tie rules could differ
    items = torch.randint(0, 40, (30,), generator=gen).numpy()
    target = torch.zeros(30, 40, dtype=torch.bool)
    target[torch.arange(30), torch.as_tensor(items)] = True
    indexes = torch.arange(30).view(-1, 1).expand(30, 40)
    reference = RetrievalRecall(top_k=10)(scores.flatten(), target.flatten(), indexes=indexes.flatten())
    assert ssl.hits_at_k(scores, items, 10).mean() == pytest.approx(reference.item(), abs=1e-6)


def test_ssl_items_come_from_the_whole_catalogue():
    """Items never in the log get gradient only through the SSL task (its items are drawn uniformly)."""
    data = rs.make_recsys_data(0, n_items=60, n_users=40, n_train=300, n_val=10, n_test=10)
    train = data.interactions.train.copy()
    train[:, 1] %= 10  # the log holds items 0..9 only
    gen = torch.Generator().manual_seed(0)
    model = rs.TwoTower(data.users.cardinalities, data.catalogue.cardinalities, 2, 4, 8, 4, gen)
    with torch.no_grad():
        for t in model.parameters():
            t[1] = t[0]
    before = model.item.table.detach().clone()
    two = lambda x, dtype=None: torch.as_tensor(x, dtype=dtype).unsqueeze(0).repeat(2, *[1] * np.ndim(x))  # noqa: E731
    table = ssl.cfm_mask_table(ssl.mutual_information_matrix(data.catalogue.features))
    ssl.train_two_towers(
        model,
        two(data.catalogue.features),
        two(data.users.features),
        two(train),
        two(rs.log_sampling_probability(np.bincount(train[:, 1], minlength=60)), torch.float32),
        table.unsqueeze(0).repeat(2, 1, 1),
        T([0.0, 1.0]),
        T([True, True]),
        n_steps=3,
        batch_size=16,
        ssl_batch_size=40,
        tau_main=0.1,
        tau_ssl=0.1,
        lr=1e-2,
        generator=gen,
        problem=T([0, 0]),
    )
    moved = (model.item.table.detach() != before).any(-1)  # (M, values): which embedding rows changed
    unseen_ids = torch.arange(10, 60)  # the item-ID rows (offset 0) of items never logged
    assert not moved[0, unseen_ids].any()  # supervised only: an unseen item's ID embedding never moves
    assert moved[1, unseen_ids].sum() > 25  # with SSL: most of them moved within 3 steps of 40 uniform items


def test_hits_at_k_is_recall_at_k_and_agrees_with_ranks():
    scores = T([[0.1, 0.9, 0.5, 0.3], [0.8, 0.1, 0.2, 0.0]])
    items = np.array([2, 3])  # ranks 1 (second best) and 3 (last)
    assert ssl.item_ranks(scores, items).tolist() == [1, 3]
    assert ssl.hits_at_k(scores, items, 2).tolist() == [1.0, 0.0]
    rel = torch.zeros(2, 4, dtype=torch.bool)
    rel[0, 2] = rel[1, 3] = True
    assert ssl.hits_at_k(scores, items, 2).tolist() == recall_at_k(scores, rel, 2).tolist()
    # ties: the stable order of ranking() (lower index first), on random scores with many ties
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (40, 30), generator=gen).float()
    items = torch.randint(0, 30, (40,), generator=gen).numpy()
    by_sort = (ranking(scores) == torch.as_tensor(items).view(-1, 1)).float().argmax(1)
    assert ssl.item_ranks(scores, items).tolist() == by_sort.tolist()


# --- claims -----------------------------------------------------------------------------------------------------


def test_recall_gain_claim_three_ways():
    base = np.array([0.50, 0.52, 0.51])
    holds = ssl.recall_gain_claim(base + [0.03, 0.031, 0.029], base, 50, "+SSL")
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == ssl.RECALL_MARGIN
    assert ssl.recall_gain_claim(base + 0.005 + np.array([0, 1e-3, -1e-3]), base, 50, "+SSL").verdict is (
        Verdict.DOES_NOT_HOLD
    )
    assert ssl.recall_gain_claim(base + [0.05, -0.03, 0.02], base, 50, "+SSL").verdict is Verdict.INCONCLUSIVE
    nan = ssl.recall_gain_claim([0.6, float("nan"), 0.6], base, 50, "+SSL")
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail


def _arm(key, mid, head, tail=(0.1, 0.1, 0.1)):
    return ssl.ArmOutcome(
        ssl.make_arms(1.0, "cfm", False)[0 if key == "baseline" else 1].arm, (0.5,) * 3, tail, mid, head, (), (), (), ()
    )


def test_bucket_gain_claim_three_ways():
    base = _arm("baseline", (0.20, 0.22, 0.21), (0.80, 0.82, 0.81))
    holds = ssl.bucket_gain_claim(_arm("cfm", (0.24, 0.264, 0.252), (0.81, 0.83, 0.82)), base, 50)
    assert holds.verdict is Verdict.HOLDS and not holds.headline
    assert holds.values == pytest.approx(tuple(0.2 - np.array([0.8, 0.82, 0.81]) ** -1 * 0.01), abs=1e-9)
    fails = ssl.bucket_gain_claim(_arm("cfm", (0.20, 0.22, 0.21), (0.88, 0.90, 0.89)), base, 50)
    assert fails.verdict is Verdict.DOES_NOT_HOLD
    zero = ssl.bucket_gain_claim(
        _arm("cfm", (0.3, 0.3, 0.3), (0.8, 0.8, 0.8)), _arm("baseline", (0.0, 0.2, 0.2), (0.8,) * 3), 50
    )
    assert zero.verdict is Verdict.INCONCLUSIVE and "not finite" in zero.detail


def test_early_stopped_claim_three_ways():
    base = np.array([0.60, 0.62, 0.61])
    holds = ssl.early_stopped_claim(base + [0.01, 0.012, 0.011], base, 50, "+SSL")
    assert holds.verdict is Verdict.HOLDS and not holds.headline and holds.margin == 0.0
    assert ssl.early_stopped_claim(base - [0.01, 0.012, 0.011], base, 50, "+SSL").verdict is Verdict.DOES_NOT_HOLD
    assert ssl.early_stopped_claim(base + [0.02, -0.02, 0.001], base, 50, "+SSL").verdict is Verdict.INCONCLUSIVE
    assert ssl.early_stopped_claim([0.7, 0.7, float("inf")], base, 50, "+SSL").verdict is Verdict.INCONCLUSIVE


def test_neighbour_purity_by_hand():
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert ssl.neighbour_purity(emb, np.array([0, 0, 1, 1])) == 1.0
    assert ssl.neighbour_purity(emb, np.array([0, 1, 0, 1])) == 0.0
    assert math.isnan(ssl.neighbour_purity(emb[:1], np.array([0])))


def test_relative_gain():
    assert ssl.relative_gain([0.3, 0.1], [0.2, 0.0]).tolist()[0] == pytest.approx(0.5)
    assert math.isnan(ssl.relative_gain([0.3, 0.1], [0.2, 0.0])[1])


# --- knobs, divergence, the run ---------------------------------------------------------------------------------


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="k=60 must be at most n_items=50"):
        ssl.run(n_items=50, k=60, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        ssl.run(train_fraction=0.05, n_train=1000, batch_size=128, progress=False)
    with pytest.raises(ValueError, match="masking"):
        ssl.run(masking="spread", progress=False)
    with pytest.raises(ValueError, match="alpha"):
        ssl.run(alpha=-1.0, progress=False)


def test_arms():
    arms = ssl.make_arms(0.5, "rfm", True)
    assert [a.arm.key for a in arms] == ["baseline", "rfm", "cfm"] and [a.alpha for a in arms] == [0.0, 0.5, 0.5]
    assert arms[1].arm.label == "+SSL RFM α=0.5" and len(ssl.make_arms(1.0, "cfm", False)) == 2


def test_a_huge_learning_rate_diverges_naming_the_series(monkeypatch):
    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))
    with pytest.raises(DivergenceError, match=r"at step \d+ in 'two-tower seed 0'"):
        ssl.run(**{**SMALL, "lr": 1e12, "n_steps": 5, "log_every": 5})


def test_small_run_has_a_headline_and_consistent_numbers():
    result = ssl.run(**{**SMALL, "compare_masking": True})
    m, arms = result.metrics, {o.arm.key: o for o in result.extras["arms"]}
    assert isinstance(result, Result) and [c.headline for c in result.claims] == [True, False, False]
    assert set(arms) == {"baseline", "cfm", "rfm"} and all(math.isfinite(v) for v in m.values() if v == v)
    gap = np.array(arms["cfm"].recall) - np.array(arms["baseline"].recall)
    assert result.claims[0].values == pytest.approx(tuple(gap), abs=1e-12)
    assert m["recall_gain"] == pytest.approx(gap.mean(), abs=1e-9)
    ks = result.extras["data"].curve_ks
    assert [c[ks.index(20)] for c in arms["cfm"].curve] == pytest.approx(arms["cfm"].recall, abs=1e-6)
    hist = result.history
    assert set(hist["series"]) == {o.arm.label for o in arms.values()} and set(hist["seed"]) == {0, 1, 2}
    assert set(hist[hist["metric"] == "val_recall"]["step"]) == {10, 20, 30}
    # model selection on the validation pairs: each model is scored at its best logged validation recall
    val = hist[hist["metric"] == "val_recall"]
    assert all(o.steps == (30, 30, 30) for o in arms.values())  # the headline scores the last weights
    for o in result.extras["early_stopped"]:
        for seed, step in zip((0, 1, 2), o.steps):
            rows = val[(val["series"] == o.arm.label) & (val["seed"] == seed)]
            assert rows.set_index("step")["value"][step] == rows["value"].max()
    assert {"recall_at_k", "bucket_gain", "val_recall", "popularity", "mutual_information", "tail_pca"} <= set(
        result.figures
    )


@pytest.mark.slow
def test_quick_preset_runs():
    result = ssl.run(progress=False)
    assert result.headline is not None and math.isfinite(result.metrics["recall_gain"])


def test_method_file_is_the_paper_only():
    source = (Path(ssl.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2007.12865" in source
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment"):
        assert banned not in source

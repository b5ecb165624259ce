"""Ranking metrics (labkit.substrates.ranking): hand-computed cases, and sklearn's ndcg_score / average_precision."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, ndcg_score

from labkit.substrates import ranking as R

# one query, five items; ranking by score: items 2, 0, 4, 1, 3; relevant items 0 and 3
SCORES = torch.tensor([[0.8, 0.3, 0.9, 0.1, 0.5]])
RELEVANT = torch.tensor([[1, 0, 0, 1, 0]], dtype=torch.bool)


def test_ranking_is_stable_on_ties():
    assert R.ranking(torch.tensor([[1.0, 2.0, 1.0, 2.0]])).tolist() == [[1, 3, 0, 2]]


def test_hand_computed_case():
    assert R.recall_at_k(SCORES, RELEVANT, 2).item() == pytest.approx(0.5)
    assert R.recall_at_k(SCORES, RELEVANT, 5).item() == pytest.approx(1.0)
    assert R.precision_at_k(SCORES, RELEVANT, 2).item() == pytest.approx(0.5)
    assert R.hit_rate_at_k(SCORES, RELEVANT, 1).item() == 0.0
    assert R.hit_rate_at_k(SCORES, RELEVANT, 2).item() == 1.0
    assert R.mrr_at_k(SCORES, RELEVANT, 5).item() == pytest.approx(0.5)
    assert R.mrr_at_k(SCORES, RELEVANT, 1).item() == 0.0
    # relevant at ranks 2 and 5: AP = (1/2 + 2/5) / 2
    assert R.average_precision(SCORES, RELEVANT).item() == pytest.approx((0.5 + 0.4) / 2)
    # nDCG@3: DCG = 1/log2(3); ideal = 1 + 1/log2(3)
    assert R.ndcg_at_k(SCORES, RELEVANT, 3).item() == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_agreement_at_k():
    a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    b = torch.tensor([[4.0, 1.0, 3.0, 2.0]])
    assert R.agreement_at_k(a, b, 2).item() == pytest.approx(0.5)
    assert R.agreement_at_k(a, a, 3).item() == 1.0


def test_rows_without_relevant_items_are_nan():
    rel = torch.zeros(1, 5, dtype=torch.bool)
    assert math.isnan(R.recall_at_k(SCORES, rel, 2).item())
    assert math.isnan(R.average_precision(SCORES, rel).item())
    assert math.isnan(R.ndcg_at_k(SCORES, rel, 2).item())


def test_against_sklearn():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(20, 30, generator=g)  # continuous: no ties, so every tie rule agrees
    gains = torch.randint(0, 4, (20, 30), generator=g).float()
    gains[:, 0] = 1.0  # every row has a gain
    relevant = gains >= 2
    relevant[:, 0] = True
    for k in (1, 5, 10, 30):
        ours = R.ndcg_at_k(scores, gains, k).numpy()
        ref = [ndcg_score(gains[i : i + 1].numpy(), scores[i : i + 1].numpy(), k=k) for i in range(20)]
        np.testing.assert_allclose(ours, ref, rtol=1e-5)
    ref_ap = [average_precision_score(relevant[i].numpy(), scores[i].numpy()) for i in range(20)]
    np.testing.assert_allclose(R.average_precision(scores, relevant).numpy(), ref_ap, rtol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="k=0"):
        R.recall_at_k(SCORES, RELEVANT, 0)
    with pytest.raises(ValueError, match="shape"):
        R.recall_at_k(SCORES, RELEVANT[:, :3], 1)
    with pytest.raises(ValueError, match="matrix"):
        R.ranking(torch.rand(5))

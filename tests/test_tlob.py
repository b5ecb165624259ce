"""TLOB (27): the simulator, splits and labels (hand cases, no horizon bias), the blocks' shapes, macro-F1 against
scikit-learn, the training loop (divergence, no look at the test split), the claim logic, one quick run."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.methods import tlob
from labkit.methods.tlob import experiment as exp
from labkit.substrates import lob as lobs


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


# --- the simulator, the splits and the normalisation ---------------------------------------------------------------


def test_simulator_book_is_consistent_and_seeded():
    m = lobs.simulate_lob(3000, seed=4)
    book = m.book.reshape(3000, 10, 4)  # (n, level, [ask p, ask v, bid p, bid v])
    assert np.array_equal(book[:, 0, 0] - book[:, 0, 2], m.spread)  # spread = ask_1 − bid_1
    assert np.array_equal(m.spread, 1 + m.regime)  # 1 tick, 2 in the mean-reverting regime
    assert np.array_equal(m.mid, (book[:, 0, 0] + book[:, 0, 2]) / 2)
    assert np.all(np.diff(book[:, :, 0], axis=1) == 1) and np.all(np.diff(book[:, :, 2], axis=1) == -1)
    assert (book[:, :, [1, 3]] >= 0).all() and set(np.unique(m.regime)) <= {0, 1}
    assert np.array_equal(lobs.simulate_lob(3000, seed=4).book, m.book)
    assert not np.array_equal(lobs.simulate_lob(3000, seed=5).book, m.book)
    assert abs(m.fast.std() - 1) < 0.15 and abs(np.corrcoef(m.fast[1:], m.fast[:-1])[0, 1] - 0.9) < 0.05


def test_volumes_carry_the_signals_at_the_card_levels():
    m = lobs.simulate_lob(20_000, seed=0)
    book = m.book.reshape(-1, 10, 4)
    imbalance = np.log1p(book[:, :, 3]) - np.log1p(book[:, :, 1])  # log bid/ask volume ≈ 2c per level
    top = np.corrcoef(imbalance[:, 0], m.fast)[0, 1]
    deep = np.corrcoef(imbalance[:, 7], m.slow)[0, 1]
    middle = np.corrcoef(imbalance[:, 3], m.slow)[0, 1]
    assert top > 0.5 and deep > 0.5 and abs(middle) < 0.1  # levels 3–5 carry neither signal


def test_regime_switches_at_the_given_rate():
    rng = np.random.default_rng(0)
    r = lobs.regimes(200_000, 0.005, rng)
    assert r[0] == 0 and np.mean(r[1:] != r[:-1]) == pytest.approx(0.005, rel=0.1)


def test_features_are_offsets_from_mid_and_standardised_with_training_statistics():
    m = lobs.simulate_lob(4000, seed=1)
    feats = lobs.lob_features(m.book, m.mid)
    assert np.allclose(feats[:, 0], m.spread / 2) and np.allclose(feats[:, 2], -m.spread / 2)
    assert np.array_equal(feats[:, 1], m.book[:, 1])
    (a, b), *_ = lobs.chronological_splits(4000)
    data = lobs.label_lob(m, 5, 8)
    scaler = lobs.Standardizer.fit(feats[a:b])
    assert np.allclose(data.x, scaler(feats), atol=1e-5)
    assert np.allclose(data.x[a:b].mean(0), 0, atol=1e-4)  # zero mean on train, not on the whole series


def test_chronological_splits_and_windows_never_cross_a_boundary():
    assert lobs.chronological_splits(1000) == [(0, 700), (700, 850), (850, 1000)]
    with pytest.raises(ValueError, match="sum to 1"):
        lobs.chronological_splits(100, (0.5, 0.2, 0.2))
    m = lobs.simulate_lob(6000, seed=2)
    T, h = 16, 20
    data = lobs.label_lob(m, h, T)
    for split in (data.train, data.val, data.test):
        assert split.ends.min() - T + 1 >= split.start  # the window starts inside the split
        assert split.ends.max() + h < split.end  # the label's future stays inside too
        assert np.all(np.diff(split.ends) > 0)  # time order
    assert data.train.end <= data.val.start and data.val.end <= data.test.start
    x = np.arange(20).reshape(10, 2)
    assert lobs.gather_windows(x, np.array([2, 9]), 3).tolist() == [
        [[0, 1], [2, 3], [4, 5]],
        [[14, 15], [16, 17], [18, 19]],
    ]


# --- the labels ------------------------------------------------------------------------------------------------------


MID = np.array([100.0, 101.0, 102.0, 101.0, 103.0, 104.0, 104.0, 106.0])


def test_tlob_labels_by_hand():
    # h = 2, w = 2: ℓ_t = (mean(m_{t+1}, m_{t+2}) − mean(m_{t−1}, m_t)) / mean(m_{t−1}, m_t)
    r = lobs.tlob_returns(MID, h=2, w=2)
    assert np.isnan(r[0]) and np.isnan(r[-1]) and np.isnan(r[-2])  # no past window / no future
    assert r[1] == pytest.approx((101.5 - 100.5) / 100.5)  # (m2+m3)/2 = 101.5, (m0+m1)/2 = 100.5
    assert r[3] == pytest.approx((103.5 - 101.5) / 101.5)  # (m4+m5)/2 = 103.5, (m2+m3)/2 = 101.5
    assert r[5] == pytest.approx((105.0 - 103.5) / 103.5)
    # w > h: the window shrinks to w' = h (h = 1, w = 10): ℓ_t = (m_{t+1} − m_t)/m_t
    r1 = lobs.tlob_returns(MID, h=1, w=10)
    assert r1[:-1] == pytest.approx(np.diff(MID) / MID[:-1]) and np.isnan(r1[-1])


def test_classic_labels_by_hand():
    # h = 2: ℓ_t = (mean(m_{t+1}, m_{t+2}) − mean(m_{t−1}, m_t)) / mean(m_{t−1}, m_t): equal to TLOB's at w = h
    r = lobs.classic_returns(MID, h=3)
    # t = 2: future mean(m3, m4, m5) = 102.667, past mean(m0, m1, m2) = 101
    assert r[2] == pytest.approx((308 / 3 - 101) / 101)
    assert np.isnan(r[1]) and np.isnan(r[5])
    assert np.allclose(lobs.classic_returns(MID, 2), lobs.tlob_returns(MID, 2, w=2), equal_nan=True)


def test_threshold_and_classes_by_hand():
    r = np.array([0.004, -0.001, np.nan, -0.006, 0.0005])
    theta = lobs.mean_abs_threshold(r)
    assert theta == pytest.approx((0.004 + 0.001 + 0.006 + 0.0005) / 4 / 2)  # 0.0014375
    assert lobs.classify(r, theta).tolist() == [lobs.UP, lobs.STATIONARY, -1, lobs.DOWN, lobs.STATIONARY]
    assert lobs.spread_threshold(np.array([1.0, 2.0]), np.array([100.0, 200.0])) == pytest.approx(1.5 / 150)


def test_theta_comes_from_the_training_split_and_labels_stay_inside_their_split():
    m = lobs.simulate_lob(8000, seed=3)
    data = lobs.label_lob(m, 10, 16, w=5)
    (a, b), (c, d), _ = lobs.chronological_splits(8000)
    assert data.theta == pytest.approx(lobs.mean_abs_threshold(lobs.tlob_returns(m.mid[a:b], 10, 5)))
    # a validation label is computed from the validation prices alone: changing the training prices leaves it
    other = lobs.LOB(m.book, np.concatenate([m.mid[:b] * 1.01, m.mid[b:]]), m.spread, m.regime, m.fast, m.slow)
    r = lobs.returns_by_split(m.mid, lobs.chronological_splits(8000), 10, 5)
    r_other = lobs.returns_by_split(other.mid, lobs.chronological_splits(8000), 10, 5)
    assert np.allclose(r[c:d], r_other[c:d], equal_nan=True)
    assert np.isnan(r[b - 10 : b]).all()  # the last h training events carry no label
    spread = lobs.label_lob(m, 10, 16, w=5, threshold="spread")
    assert spread.theta == pytest.approx(lobs.spread_threshold(m.spread[a:b], m.mid[a:b]))
    with pytest.raises(ValueError, match="threshold"):
        lobs.label_lob(m, 10, 16, threshold="median")


def test_tlob_labels_have_no_horizon_bias():
    """The card's horizon bias: the classic label at horizon h smooths over h events, so it depends on the path
    in between; TLOB's label depends only on the w events ending at t and at t + h."""
    rng = np.random.default_rng(0)
    mid = 1000 + np.cumsum(rng.standard_normal(300))
    t, h, w = 100, 50, 10
    bumped = mid.copy()
    bumped[t + 1 : t + h - w + 1] += 25.0  # move only the prices strictly between the two smoothing windows
    assert lobs.tlob_returns(bumped, h, w)[t] == pytest.approx(lobs.tlob_returns(mid, h, w)[t], abs=1e-15)
    assert lobs.classic_returns(bumped, h)[t] != pytest.approx(lobs.classic_returns(mid, h)[t], abs=1e-4)
    # a late move (flat, then a jump in the last h/5 events) is labelled up by TLOB; the classic label dilutes it
    step = np.concatenate([np.full(140, 100.0), np.full(60, 100.5)])
    t = 99  # the jump is at t + 41 ≤ t + h
    assert lobs.tlob_returns(step, h, w)[t] == pytest.approx(0.005)
    assert lobs.classic_returns(step, h)[t] == pytest.approx(0.005 * 10 / 50)
    # the smoothing length stays w for every h ≥ w: the window sizes do not grow with the horizon
    for hh in (10, 20, 100):
        moved = mid.copy()
        moved[t - w] += 50.0  # just before the past window
        assert lobs.tlob_returns(moved, hh, w)[t] == pytest.approx(lobs.tlob_returns(mid, hh, w)[t], abs=1e-15)


def test_late_move_probe_by_hand():
    mid = np.array([0, 0, 0, 1, 2, 3, 3, 3, 3, 2, 1, 1], float)
    labels = np.array([lobs.UP, lobs.DOWN, lobs.STATIONARY, -1, lobs.UP, -1, -1, -1, -1, -1, -1, -1])
    # h = 4, h/4 = 1: t = 0: sign(m4 − m1) = +1 (UP agrees); t = 1: sign(m5 − m2) = +1 (DOWN disagrees);
    # t = 4: sign(m8 − m5) = 0 → left out; stationary and unlabelled events are not counted
    assert lobs.late_move_agreement(mid, labels, 4) == pytest.approx(0.5)


def test_probe_favours_tlob_labels_at_long_horizons_on_the_simulator():
    rows = exp.probe_rows(lobs.simulate_lob(20_000, seed=0), w=10)
    k = tlob.PROBE_HORIZONS.index(50)
    assert rows[k][1] >= rows[k][0] + 0.05  # the card's prototype: 0.96 vs 0.82
    k5 = tlob.PROBE_HORIZONS.index(5)
    assert rows[k5][1] == rows[k5][0]  # h ≤ w: TLOB's labels are the classic ones (w' = h)


# --- the blocks and the models -----------------------------------------------------------------------------------


def test_bin_normalises_both_axes_and_is_device_safe():
    x = torch.randn(3, 8, 5) * 4 + 2
    bin_ = tlob.BiN(5, 8)
    with torch.no_grad():
        bin_.mix.copy_(torch.tensor([1.0, 0.0]))
        z_time = bin_(x)
        bin_.mix.copy_(torch.tensor([0.0, 1.0]))
        z_feat = bin_(x)
        bin_.mix.copy_(torch.tensor([-1.0, 2.0]))  # a negative weight counts as 0 (no CUDA tensor made)
        assert torch.allclose(bin_(x), 2 * z_feat)
    assert torch.allclose(z_time.mean(1), torch.zeros(3, 5), atol=1e-5)
    assert torch.allclose(z_time.std(1), torch.ones(3, 5), atol=1e-5)
    assert torch.allclose(z_feat.mean(2), torch.zeros(3, 8), atol=1e-5)
    const = torch.ones(1, 8, 5)
    assert torch.isfinite(bin_(const)).all()  # std < 1e-4 counts as 1


def test_sinusoidal_encoding_by_hand():
    pe = tlob.sinusoidal_encoding(3, 4)
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert pe[2, 0].item() == pytest.approx(math.sin(2)) and pe[2, 3].item() == pytest.approx(math.cos(2 / 100))
    with pytest.raises(ValueError, match="even"):
        tlob.sinusoidal_encoding(3, 5)


def test_attention_block_shapes_and_attention_rows_sum_to_one():
    block = tlob.AttentionBlock(width=8, heads=2, out=2)
    out, att = block(torch.randn(4, 6, 8))
    assert out.shape == (4, 6, 2) and att.shape == (4, 2, 6, 6)
    assert torch.allclose(att.sum(-1), torch.ones(4, 2, 6), atol=1e-6)
    same = tlob.MLPBlock(8, 32, 8)
    x = torch.randn(2, 3, 8)
    with torch.no_grad():  # with zero weights the MLP sub-block is GELU(LayerNorm(x)): the residual is there
        for p in same.parameters():
            p.zero_() if p.dim() > 1 else None
        same.fc2.bias.zero_()
        assert torch.allclose(same(x), torch.nn.functional.gelu(torch.nn.functional.layer_norm(x, (8,))), atol=1e-5)


def test_attention_matches_torch_scaled_dot_product():
    block = tlob.AttentionBlock(width=8, heads=2, out=8)
    x = torch.randn(2, 5, 8)
    q, k, v = (lin(x).view(2, 5, 2, 8).transpose(1, 2) for lin in (block.q, block.k, block.v))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    ref = block.w0(ref.transpose(1, 2).reshape(2, 5, 16))
    expected = block.mlp(block.norm(x + ref))
    assert torch.allclose(block(x)[0], expected, atol=1e-5)


def test_tlob_dual_attention_shapes():
    model = tlob.TLOB(n_features=40, seq_len=16, dim=8, n_layers=2, heads=1, sinusoidal=True)
    logits = model(torch.randn(5, 16, 40), keep_attention=True)
    assert logits.shape == (5, 3)
    shapes = [tuple(a.shape) for a in model.attention]
    # temporal (T × T), feature (D × D), then the last pair (which shrinks the widths afterwards)
    assert shapes == [(5, 1, 16, 16), (5, 1, 8, 8), (5, 1, 16, 16), (5, 1, 2, 2)]
    with pytest.raises(ValueError, match="multiples of 4"):
        tlob.TLOB(40, 18, 8, 2)


def test_head_shrinks_by_four_until_at_most_128():
    head = tlob.classifier_head(40 * 128 // 16)  # the paper's D/4 · T/4 = 10 · 32 = 320 → 80 → 3
    sizes = [m.out_features for m in head if isinstance(m, torch.nn.Linear)]
    assert sizes == [80, 3]
    assert [m.out_features for m in tlob.classifier_head(100) if isinstance(m, torch.nn.Linear)] == [3]


def test_mlplob_shapes_and_no_attention():
    model = tlob.MLPLOB(n_features=40, seq_len=16, dim=8, n_layers=2)
    assert model(torch.randn(3, 16, 40)).shape == (3, 3)
    assert not any(isinstance(m, (tlob.AttentionBlock, torch.nn.MultiheadAttention)) for m in model.modules())
    widths = [(b.fc1.in_features, b.fc2.out_features) for b in model.blocks]
    assert widths == [(8, 8), (16, 16), (8, 2), (16, 4)]  # feature, time, then the shrinking last pair


# --- macro-F1 --------------------------------------------------------------------------------------------------------


def test_macro_f1_by_hand_and_against_sklearn():
    from sklearn.metrics import f1_score

    y, p = [0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0]
    # class 0: TP 1, FP 1, FN 1 → 0.5; class 1: TP 1, FP 1, FN 0 → 2/3; class 2: TP 2, FP 0, FN 1 → 0.8
    assert tlob.macro_f1(y, p) == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, p = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
        assert tlob.macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro", labels=[0, 1, 2]))
    one = np.zeros(10, int)  # a class never true nor predicted scores 0, as in sklearn with zero_division=0
    assert tlob.macro_f1(one, one) == pytest.approx(
        f1_score(one, one, average="macro", labels=[0, 1, 2], zero_division=0)
    )


# --- training -------------------------------------------------------------------------------------------------------


def small_data(h=5, T=8, n=3000, seed=0):
    return lobs.label_lob(lobs.simulate_lob(n, seed), h, T, train_stride=4)


def test_training_keeps_the_best_validation_epoch_and_never_reads_the_test_split(monkeypatch):
    data = small_data()
    seen = []
    original = lobs.gather_windows

    def spy(x, ends, seq_len):
        seen.append(np.asarray(ends).max())
        return original(x, ends, seq_len)

    monkeypatch.setattr(tlob.method, "gather_windows", spy)
    torch.manual_seed(0)
    model = tlob.MLPLOB(40, 8, 8, 1)
    best, logs = tlob.train_trend_model(
        model,
        torch.from_numpy(data.x),
        (data.train.ends, data.train.labels),
        (data.val.ends, data.val.labels),
        seq_len=8,
        epochs=3,
        lr=1e-2,
        batch=64,
        ema_decay=0.5,
        seed=0,
    )
    assert max(seen) < data.test.start  # only training and validation windows were built
    assert [log.epoch for log in logs] == [1, 2, 3]
    val = tlob.predict(best, torch.from_numpy(data.x), data.val.ends, 8)
    kept = torch.nn.functional.cross_entropy(val, torch.as_tensor(data.val.labels)).item()
    assert kept == pytest.approx(min(log.val_loss for log in logs), abs=1e-5)
    best_before = math.inf
    for before, after in zip(logs, logs[1:]):  # the lr halves unless the validation loss improved by ≥ 0.002
        halve = before.val_loss - best_before > -0.002
        assert after.lr == pytest.approx(before.lr / 2 if halve else before.lr)
        best_before = min(best_before, before.val_loss)


def test_weight_ema_by_hand():
    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = tlob.WeightEMA(lin, decay=0.9)
    with torch.no_grad():
        lin.weight.fill_(3.0)
    ema.update(lin)
    assert ema.shadow.weight.item() == pytest.approx(0.9 * 1 + 0.1 * 3)


def test_a_huge_learning_rate_diverges_naming_the_series():
    data = small_data()
    model = tlob.TLOB(40, 8, 8, 1)
    series = "TLOB h=5 seed 0"
    from labkit.core import check_finite, check_weights

    with pytest.raises(DivergenceError, match="TLOB h=5 seed 0"):
        tlob.train_trend_model(
            model,
            torch.from_numpy(data.x),
            (data.train.ends, data.train.labels),
            (data.val.ends, data.val.labels),
            seq_len=8,
            epochs=3,
            lr=1e12,
            batch=64,
            ema_decay=0.0,
            seed=0,
            on_step=lambda s, loss: check_finite(loss, s, series),
            on_epoch=lambda log, net: check_weights(net, log.epoch, series),
        )


# --- claims ----------------------------------------------------------------------------------------------------------


def test_headline_claim_three_ways():
    logistic = [0.50, 0.51, 0.49]
    holds = tlob.tlob_vs_logistic_claim([0.60, 0.61, 0.59], logistic, 20, [0.58, 0.6, 0.6])
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == 0.06
    assert tlob.tlob_vs_logistic_claim([0.52, 0.53, 0.51], logistic, 20).verdict is Verdict.DOES_NOT_HOLD
    assert tlob.tlob_vs_logistic_claim([0.70, 0.51, 0.56], logistic, 20).verdict is Verdict.INCONCLUSIVE
    nan = tlob.tlob_vs_logistic_claim([0.6, float("nan"), 0.6], logistic, 20)
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail


def test_supporting_claims_three_ways():
    maj = [0.16, 0.17, 0.15]
    assert tlob.tlob_vs_majority_claim([0.56, 0.57, 0.55], maj, 20).verdict is Verdict.HOLDS
    assert tlob.tlob_vs_majority_claim([0.36, 0.37, 0.35], maj, 20).verdict is Verdict.DOES_NOT_HOLD
    assert tlob.tlob_vs_majority_claim([0.9, 0.2, 0.5], maj, 20).verdict is Verdict.INCONCLUSIVE
    assert tlob.probe_claim([0.96, 0.97, 0.95], [0.82, 0.83, 0.81]).verdict is Verdict.HOLDS
    assert tlob.probe_claim([0.84, 0.85, 0.83], [0.82, 0.83, 0.81]).verdict is Verdict.DOES_NOT_HOLD
    assert tlob.probe_claim([0.9, float("nan"), 0.9], [0.8] * 3).verdict is Verdict.INCONCLUSIVE
    assert tlob.spread_claim([0.55, 0.56, 0.54], [0.45, 0.46, 0.44], "TLOB", 20).verdict is Verdict.HOLDS
    assert tlob.spread_claim([0.45, 0.46, 0.44], [0.55, 0.56, 0.54], "TLOB", 20).verdict is Verdict.DOES_NOT_HOLD
    assert tlob.spread_claim([0.6, 0.4, 0.5], [0.5, 0.5, 0.5], "TLOB", 20).verdict is Verdict.INCONCLUSIVE
    assert not any(c.headline for c in [tlob.probe_claim([1.0], [0.0]), tlob.spread_claim([1.0], [0.0], "T", 1)])


# --- knobs and the run -----------------------------------------------------------------------------------------------


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="claim_horizon"):
        tlob.run(horizons="5,10", progress=False)
    with pytest.raises(ValueError, match="multiples of 4"):
        tlob.run(seq_len=30, progress=False)
    with pytest.raises(ValueError, match="horizons"):
        tlob.run(horizons="five", progress=False)
    with pytest.raises(ValueError, match="n_events"):
        tlob.run(n_events=2000, seq_len=256, progress=False)
    with pytest.raises(ValueError, match="unknown parameter"):
        tlob.run(horizon=20, progress=False)
    assert tlob.parse_horizons(" 20, 5,20") == (5, 20)


def test_knobs_follow_the_card():
    quick = {p.name: p.quick for p in tlob.PARAMS}
    full = {p.name: p.value_for("full") for p in tlob.PARAMS}
    assert (quick["seq_len"], quick["dim"], quick["n_layers"], quick["heads"]) == (32, 16, 2, 1)
    assert (full["seq_len"], full["dim"], full["n_layers"], full["lr"], full["ema_decay"]) == (128, 40, 4, 1e-4, 0.999)
    assert quick["n_seeds"] >= 3 and quick["smooth_window"] == 10


@pytest.mark.slow
def test_quick_run_has_a_headline_and_consistent_numbers():
    result = tlob.run(n_events=6000, seq_len=16, epochs=1, n_seeds=3, progress=False)
    assert isinstance(result, Result) and result.claims[0].headline
    assert [c.headline for c in result.claims] == [True, False, False, False]
    m = result.metrics
    assert all(math.isfinite(v) for v in m.values())
    scores = {(s.model, s.horizon): s for s in result.extras["scores"]}
    tl, lg = scores["TLOB", 20], scores["logistic", 20]
    assert result.claims[0].values == pytest.approx(tuple(np.subtract(tl.f1, lg.f1)), abs=1e-12)
    assert m["f1_tlob_h20"] == pytest.approx(np.mean(tl.f1))
    assert sum(map(sum, tl.confusion)) == sum(map(sum, lg.confusion))  # same test windows for every model
    assert {"window", "probe", "f1_vs_horizon", "confusion", "attention", "label_shares"} <= set(result.figures)
    assert set(result.history["metric"]) == {"train_loss", "val_loss", "val_macro_f1"}
    assert set(result.history["series"]) == {"TLOB h=20", "MLPLOB h=20", "MLPLOB h=20 θ=spread"}
    assert set(result.history["seed"]) == {0, 1, 2}


def test_run_with_a_huge_learning_rate_stops_naming_the_series(monkeypatch):
    import labkit.core.params as params_module

    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))
    with pytest.raises(DivergenceError, match=r"at step \d+ in 'TLOB h=20 seed 0'"):
        tlob.run(lr=1e12, n_events=6000, seq_len=16, progress=False, record=False)


def test_method_file_is_the_paper_only():
    source = (Path(tlob.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2502.15757" in source
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment", "figures"):
        assert banned not in source

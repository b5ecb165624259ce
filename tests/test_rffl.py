"""RFFL (#12): contributions, reputations, removal, per-layer rewards, clipping and attacks, data, one run."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from labkit.core import Verdict, resolve_params, torch_threads
from labkit.methods import rffl
from labkit.substrates.federated import (
    Client,
    LocalSGD,
    clip_to_norm,
    fedavg,
    federated_round,
    flatten_update,
    flip_labels,
    invert_values,
    model_state,
    randomize_signs,
    rescale_values,
    uniform_noise_like,
    update_norm,
)

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def stacked(*rows):
    """Uploads of m participants for a one-tensor model: name "w" → [m, d]."""
    return {"w": T([list(r) for r in rows])}


# ---------------------------------------------------------------- the paper's pieces, by hand


def test_contributions_are_cosines_with_the_aggregate():
    # u = (1, 1): cos((1,0), u) = 1/√2, cos((0,2), u) = 2/(2√2), cos((−1,0), u) = −1/√2, a zero upload → 0
    phi = rffl.contributions(T([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.0, 0.0]]), T([1.0, 1.0]))
    s = 1 / math.sqrt(2)
    assert phi.tolist() == pytest.approx([s, s, -s, 0.0], abs=1e-6)


def test_weighted_update_by_hand():
    u = rffl.weighted_update({"w": T([[1.0, 0.0], [0.0, 4.0]]), "b": T([[2.0], [6.0]])}, T([0.25, 0.75]))
    assert u["w"].tolist() == [0.25, 3.0] and u["b"].tolist() == [5.0]


def test_reputation_update_removal_and_reward_fractions_by_hand():
    # r = 0, α = 0.95, φ = (0.5, 0.3, −0.2): (1 − α)φ = (0.025, 0.015, −0.01), Σ = 0.03
    r = rffl.update_reputation(torch.zeros(3), T([0.5, 0.3, -0.2]), 0.95, torch.ones(3, dtype=torch.bool))
    assert r.tolist() == pytest.approx([0.025 / 0.03, 0.5, -0.01 / 0.03], abs=1e-6)
    # β = 1/3, |R| = 3 → threshold 1/9: the negative one goes, r renormalised over (5/6, 1/2)
    r, active, dropped, thr = rffl.remove_low_reputation(r, torch.ones(3, dtype=torch.bool), 1 / 3)
    assert thr == pytest.approx(1 / 9) and dropped.tolist() == [False, False, True]
    assert active.tolist() == [True, True, False] and r.tolist() == pytest.approx([0.625, 0.375, 0.0], abs=1e-6)
    assert rffl.reward_fractions(r).tolist() == pytest.approx([1.0, 0.6, 0.0], abs=1e-6)
    # next round, φ = (0.2, 0.9, 0.9): removed stays at 0; (0.59375 + 0.01, 0.35625 + 0.045) / 1.005
    r2 = rffl.update_reputation(r, T([0.2, 0.9, 0.9]), 0.95, active)
    assert r2.tolist() == pytest.approx([0.60375 / 1.005, 0.40125 / 1.005, 0.0], abs=1e-6)


def test_threshold_uses_the_size_of_R_before_this_rounds_removals():
    # β = 0.25, |R| = 4 → threshold 1/16: only 0.04 goes. (The first official version shrank |R| inside the
    # loop: after dropping 0.04 the threshold would rise to 1/12 and also drop 0.07; the later one fixed it.)
    r = T([0.04, 0.5, 0.39, 0.07])
    r2, active, dropped, thr = rffl.remove_low_reputation(r, torch.ones(4, dtype=torch.bool), 0.25)
    assert thr == pytest.approx(0.0625) and dropped.tolist() == [True, False, False, False]
    assert r2.tolist() == pytest.approx([0.0, 0.5 / 0.96, 0.39 / 0.96, 0.07 / 0.96], abs=1e-6)


def test_keep_count_ceil_and_the_official_n_minus_one_cap():
    assert rffl.keep_count(0.25, 10) == 3  # ⌈2.5⌉
    assert rffl.keep_count(0.2, 10) == 2
    assert rffl.keep_count(1.0, 10) == 9  # q = 1 leaves out the smallest entry, as the code
    assert rffl.keep_count(0.01, 10) == 1  # even the lowest q gets one entry per layer
    assert rffl.keep_count(0.0, 10) == 0 and rffl.keep_count(-0.1, 10) == 0
    assert rffl.keep_count(1.0, 1) == 1


def test_sparsify_layer_keeps_the_largest_magnitudes_by_hand():
    t = T([0.5, -3.0, 1.0, -2.0, 0.1])
    assert rffl.sparsify_layer(t, 0.5).tolist() == [0.0, -3.0, 1.0, -2.0, 0.0]  # k = ⌈2.5⌉ = 3
    assert rffl.sparsify_layer(t, 1.0).tolist() == [0.5, -3.0, 1.0, -2.0, 0.0]  # k = 4
    assert rffl.sparsify_layer(t, 0.0).tolist() == [0.0] * 5
    assert rffl.sparsify_layer(T([1.0, -1.0, 0.5]), 0.1).tolist() == [1.0, -1.0, 0.0]  # a tie with the k-th is kept


def test_sparsify_per_layer_counts_each_layer_separately():
    u = {"a": T([[4.0, 1.0], [2.0, 3.0]]), "b": T([0.1, 0.3, 0.2, 0.4])}
    got = rffl.sparsify_per_layer(u, 0.5)  # 2 of 4 in each layer, not 4 of 8 overall
    assert got["a"].tolist() == [[4.0, 0.0], [0.0, 3.0]]
    assert got["b"].tolist() == pytest.approx([0.0, 0.3, 0.0, 0.4])


def test_reputation_server_two_rounds_by_hand():
    server = rffl.ReputationServer(T([2.0, 1.0, 1.0]), alpha=0.95, beta=1 / 3)
    # round 1, data-share weights (0.5, 0.25, 0.25): u = (0.25, 0.25); φ = (1/√2, 1/√2, −1/√2) → r ∝ φ
    step = server.step(stacked((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)))
    assert step.u["w"].tolist() == pytest.approx([0.25, 0.25])
    assert step.r.tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-6)  # (1, 1, −1) → third removed
    assert server.active.tolist() == [True, True, False] and server.removed_round == {2: 1}
    assert step.q.tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert step.reward(0)["w"].tolist() == pytest.approx([0.25, 0.25])  # n = 2: keep 1, the tie keeps both
    assert step.reward(2)["w"].tolist() == [0.0, 0.0]
    # round 2, reputation weights (0.5, 0.5, 0): the removed upload has no weight; u = (1, 0.5)
    step = server.step(stacked((2.0, 0.0), (0.0, 1.0), (5.0, 5.0)))
    assert step.u["w"].tolist() == pytest.approx([1.0, 0.5])
    phi1, phi2 = 2 / (2 * math.sqrt(1.25)), 0.5 / math.sqrt(1.25)
    raw = [0.475 + 0.05 * phi1, 0.475 + 0.05 * phi2]
    assert step.r.tolist() == pytest.approx([raw[0] / sum(raw), raw[1] / sum(raw), 0.0], abs=1e-6)
    assert step.threshold == pytest.approx(1 / 6) and not step.dropped.any()
    assert step.q.tolist() == pytest.approx([1.0, raw[1] / raw[0], 0.0], abs=1e-6)


def test_grace_rounds_postpone_removal():
    server = rffl.ReputationServer(T([1.0, 1.0, 1.0]), grace_rounds=1)
    server.step(stacked((1.0, 0.0), (1.0, 0.1), (-1.0, 0.0)))
    assert server.active.all() and server.r[2] < 0  # negative, but kept in round 1
    server.step(stacked((1.0, 0.0), (1.0, 0.1), (-1.0, 0.0)))
    assert server.active.tolist() == [True, True, False] and server.removed_round == {2: 2}


def test_fairness_rho_is_pearson_and_zero_when_undefined():
    x, y = [0.5, 0.7, 0.8, 0.9], [0.6, 0.65, 0.9, 0.85]
    assert rffl.fairness_rho(x, y) == pytest.approx(pearsonr(x, y)[0], abs=1e-12)
    assert rffl.fairness_rho(x, [0.9] * 4) == 0.0  # FedAvg: one model for all


# ---------------------------------------------------------------- clipping and attacks (core)


def test_clip_to_norm_by_hand():
    u = {"a": T([3.0, 0.0]), "b": T([0.0, 4.0])}  # ‖u‖ = 5
    got = clip_to_norm(u, 1.0)
    assert got["a"].tolist() == pytest.approx([0.6, 0.0]) and got["b"].tolist() == pytest.approx([0.0, 0.8])
    assert clip_to_norm(u, 5.0)["b"].tolist() == [0.0, 4.0]
    twice = clip_to_norm(got, 1.0)
    assert twice["a"].tolist() == pytest.approx(got["a"].tolist(), rel=1e-6)


def test_attacks_entry_by_entry():
    t = torch.linspace(0.5, 2.0, 1000)
    s = randomize_signs(t, torch.Generator().manual_seed(0))
    assert torch.equal(s.abs(), t) and 400 < int((s < 0).sum()) < 600
    assert torch.equal(s, randomize_signs(t, torch.Generator().manual_seed(0)))  # reproducible
    noise = uniform_noise_like(t, torch.Generator().manual_seed(1))
    assert noise.min() >= -1 and noise.max() <= 1 and abs(float(noise.mean())) < 0.1
    inv = invert_values(t, torch.Generator().manual_seed(2))
    changed = inv != t
    assert 400 < int(changed.sum()) < 600
    assert torch.allclose(inv[changed], 1 / t[changed])
    big = rescale_values(t, torch.Generator().manual_seed(3))
    assert (big.abs() <= 100 * t + 1e-4).all() and int((big < 0).sum()) > 300
    assert flip_labels(T([0, 1, 7, 1, 3])).tolist() == [0, 7, 7, 7, 3]


# ---------------------------------------------------------------- data


def test_powerlaw_shards_sizes_by_hand_and_disjoint():
    shards = rffl.powerlaw_shards(862, 5, np.random.default_rng(0))
    assert [len(s) for s in shards] == [57, 114, 172, 229, 287]  # ⌊i·862/15⌋
    allidx = np.concatenate(shards)
    assert len(np.unique(allidx)) == len(allidx) and allidx.max() < 862


def test_class_imbalance_shards_see_the_first_classes_only():
    labels = np.repeat(np.arange(10), 30)
    shards = rffl.class_imbalance_shards(labels, 4, np.random.default_rng(0))  # c = linspace(1, 10, 4) = 1, 4, 7, 10
    assert [sorted(set(labels[s])) for s in shards] == [[0], list(range(4)), list(range(7)), list(range(10))]
    assert [len(s) for s in shards] == [75, 72, 70, 70]  # ⌊75/c⌋·c


def test_adversaries_copy_the_median_shard_and_flip_labels():
    p = SimpleNamespace(**resolve_params(rffl.PARAMS, "quick"))
    fed = rffl.honest_federation(p, 0, "cpu")
    sizes = [q.client.n for q in fed.participants]
    assert sizes == sorted(sizes) and len(sizes) == 5
    adv = rffl.with_adversaries(fed, "label_flip", 2)
    assert [q.kind for q in adv.participants] == ["honest"] * 5 + ["label_flip"] * 2
    median = fed.participants[2].client
    assert adv.participants[5].client.n == median.n
    assert torch.equal(adv.participants[6].client.y, flip_labels(median.y)) and (median.y == 1).any()
    assert rffl.with_adversaries(fed, "none", 2) is fed
    assert fed.x_test.shape == (360, 64)


def test_upsampled_digits_shape_and_range():
    x = np.random.default_rng(0).uniform(0, 1, (3, 64)).astype(np.float32)
    up = rffl.upsample_digits(x, np.random.default_rng(1))
    assert up.shape == (3, 784) and up.min() >= 0 and up.max() <= 1
    assert rffl.DigitsCNN(28)(torch.as_tensor(up)).shape == (3, 10)


# ---------------------------------------------------------------- rounds


def tiny_federation(n_free_riders=1):
    torch.manual_seed(0)
    parts = [
        rffl.Participant("honest", f"P{i}", Client(torch.randn(n, 6), torch.randint(0, 3, (n,))))
        for i, n in enumerate((8, 16, 24))
    ]
    parts += [rffl.Participant("free_rider", "fr", parts[1].client)] * n_free_riders
    return parts


def test_rffl_round_steps_own_model_then_adds_the_reward():
    parts, worker = tiny_federation(), torch.nn.Linear(6, 3)
    init = model_state(worker)
    cfg = rffl.RoundConfig(0, 1, 0.1, 0.977, 64, gamma=0.05)  # full batch: order does not matter
    server = rffl.ReputationServer(T([float(q.client.n) for q in parts]))
    states = [dict(init) for _ in parts]
    step, losses = rffl.rffl_round(states, parts, server, worker, cfg, rffl.participant_generators(0, 4))
    own, _ = rffl.local_delta(worker, init, parts[0].client, cfg, torch.Generator())
    own = clip_to_norm(own, 0.05)
    for k in init:
        assert torch.allclose(states[0][k], init[k] + own[k] + step.reward(0)[k], atol=1e-6)
    assert float(update_norm(step.u)) <= 0.05 + 1e-6  # u is a convex mix of clipped uploads
    assert losses.shape == (4,)
    if not server.active[3]:  # a removed free-rider gets nothing
        assert all(torch.equal(states[3][k], init[k]) for k in init)


def test_fedavg_arm_is_the_core_simulators_fedavg():
    parts, worker = tiny_federation(0), torch.nn.Linear(6, 3)
    init = model_state(worker)
    cfg = rffl.RoundConfig(0, 1, 0.1, 1.0, 64)  # no clipping, full batch
    state, _ = rffl.fedavg_round(dict(init), parts, worker, cfg, rffl.participant_generators(0, 3))
    model = torch.nn.Linear(6, 3)
    model.load_state_dict(init)
    federated_round(
        model,
        [q.client for q in parts],
        torch.nn.functional.cross_entropy,
        LocalSGD(batch_size=64, lr=0.1, momentum=0.0, weight_decay=0.0),
        fedavg,
        torch.Generator(),
    )
    for k, v in model.state_dict().items():
        assert torch.allclose(state[k], v, atol=1e-6)


def test_free_rider_upload_is_clipped_noise_and_adversaries_corrupt():
    parts, worker = tiny_federation(), torch.nn.Linear(6, 3)
    init = model_state(worker)
    cfg = rffl.RoundConfig(0, 1, 0.1, 0.977, 64, gamma=0.5)
    up, own, _ = rffl.participant_upload(parts[3], init, worker, cfg, torch.Generator().manual_seed(0))
    assert own is None and float(update_norm(up)) == pytest.approx(0.5, rel=1e-5)
    sign = rffl.Participant("sign_flip", "sf", parts[1].client)
    up, own, _ = rffl.participant_upload(sign, init, worker, cfg, torch.Generator().manual_seed(0))
    honest, _, _ = rffl.participant_upload(parts[1], init, worker, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(flatten_update(up).abs(), flatten_update(honest).abs(), atol=1e-6)
    assert not torch.allclose(flatten_update(up), flatten_update(honest))


def test_last_removal_of_an_outcome():
    def outcome(removed, adversaries):
        return rffl.RFFLOutcome([0.9], removed, adversaries, [1.0], 0.0)

    assert outcome({"a": 1, "b": 3}, ["a", "b"]).last_removal() == 3
    assert outcome({"a": 1}, ["a", "b"]).last_removal() is None  # b never left R
    assert outcome({}, []).last_removal() is None


# ---------------------------------------------------------------- claims: holds, does not hold, inconclusive


def test_fairness_claim_three_verdicts():
    holds = rffl.fairness_claim([0.95, 0.92, 0.97], scenario="free-rider")
    assert holds.headline and holds.margin == 0.7 and holds.verdict is Verdict.HOLDS
    assert rffl.fairness_claim([0.2, 0.4, 0.3], scenario="free-rider").verdict is Verdict.DOES_NOT_HOLD
    assert rffl.fairness_claim([0.998, 0.748, 0.809], scenario="free-rider").verdict is Verdict.INCONCLUSIVE
    assert not rffl.fairness_claim([0.9], scenario="x", headline=False).headline


def test_removal_claim_three_verdicts_and_never_removed():
    holds = rffl.removal_claim([1, 1, 2], scenario="free-rider", n_rounds=30)
    assert holds.verdict is Verdict.HOLDS and not holds.higher_is_better and holds.margin == 5
    never = rffl.removal_claim([None, None, None], scenario="free-rider", n_rounds=30)
    assert never.values == (31.0, 31.0, 31.0) and never.verdict is Verdict.DOES_NOT_HOLD
    assert rffl.removal_claim([1, None, 2], scenario="free-rider", n_rounds=30).verdict is Verdict.INCONCLUSIVE


def test_accuracy_claim_three_verdicts():
    holds = rffl.accuracy_claim([0.93, 0.92, 0.90], [0.90, 0.88, 0.86], scenario="free-rider")
    assert holds.margin == pytest.approx(-0.02) and holds.verdict is Verdict.HOLDS
    fails = rffl.accuracy_claim([0.80, 0.79, 0.77], [0.90, 0.88, 0.86], scenario="free-rider")
    assert fails.verdict is Verdict.DOES_NOT_HOLD
    mixed = rffl.accuracy_claim([0.95, 0.80, 0.90], [0.90, 0.88, 0.86], scenario="free-rider")
    assert mixed.verdict is Verdict.INCONCLUSIVE


def test_label_flip_claim_three_verdicts():
    holds = rffl.label_flip_claim([0.0, 0.01, 0.0], [0.17, 0.2, 0.15])
    assert holds.verdict is Verdict.HOLDS and not holds.higher_is_better
    assert rffl.label_flip_claim([0.3, 0.35, 0.32], [0.1, 0.12, 0.11]).verdict is Verdict.DOES_NOT_HOLD
    assert rffl.label_flip_claim([0.0, 0.3, 0.1], [0.1, 0.1, 0.1]).verdict is Verdict.INCONCLUSIVE


def test_run_rejects_bad_params():
    with pytest.raises(ValueError):
        rffl.run(preset="quick", attacks="dos")
    with pytest.raises(ValueError):
        rffl.run(preset="quick", beta=2.0)
    with pytest.raises(ValueError):
        rffl.run(preset="quick", n_honst=3)


def test_small_run_headline_and_records():
    r = rffl.run(rounds=4, n_seeds=2, progress=False)
    assert list(r.history.columns) == ["seed", "step", "series", "metric", "value"]
    assert set(r.history.seed) == {0, 1} and r.history.step.max() == 4
    assert r.headline is r.claims[0] and "fairness" in r.headline.claim
    assert [len(c.values) for c in r.claims] == [2, 2, 2]  # fairness, removal, accuracy
    assert all(math.isfinite(v) for v in r.metrics.values())
    sc = r.extras["scenarios"]["free_rider"]
    assert len(sc.rffl) == len(sc.fedavg) == len(sc.rho) == 2 and len(r.extras["gammas"]) == 2
    assert r.claims[0].values == pytest.approx(tuple(sc.rho))
    assert {"test_acc", "reputation", "fairness", "participant_acc", "robust_acc"} <= set(r.figures)
    rep = r.history[(r.history.metric == "reputation") & (r.history.step == 4)]
    for s in (0, 1):  # r sums to 1 over R every round
        assert rep[rep.seed == s].value.sum() == pytest.approx(1.0, abs=1e-5)


def test_label_flip_and_sign_flip_scenarios_run():
    r = rffl.run(attacks="free_rider,label_flip,sign_flip", n_seeds=1, rounds=3, progress=False)
    assert r.extras["attacks"] == ["free_rider", "label_flip", "sign_flip"]
    assert [c.headline for c in r.claims].count(True) == 1 and "free-rider" in r.claims[0].claim
    claims = [c.claim.split(":")[0] for c in r.claims]
    assert claims.count("robustness") == 2  # free-rider and sign flipping are expelled kinds
    assert claims.count("robustness to label flipping") == 1
    assert {"reputation_label_flip", "reputation_sign_flip"} <= set(r.figures)

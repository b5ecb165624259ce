"""TLOB's experiment: the typed knobs, the simulated order books, TLOB and MLPLOB against majority-class and
logistic-regression baselines across horizons, the horizon-bias probe of the labelling, the spread-threshold
experiment, the claims, run().

One seed = one simulated market (:func:`labkit.substrates.lob.simulate_lob`) and one initialisation of every model.
Splits are chronological (70/15/15); features are standardised and θ is computed on the training split; a split's
labels use that split's prices only (its last h events carry no label), so no window or label crosses a boundary.
The epoch kept is the one with the best validation loss; the test split is scored once, at the end.

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labkit.core import ClaimCheck, Outcome, RunContext, knob, method_run, nonfinite_note, params_of
from labkit.substrates import lob as lobs

from .figures import make_figures
from .method import MLPLOB, TLOB, EpochLog, macro_f1, predict, train_trend_model


@dataclass(frozen=True)
class Knobs:
    horizons: str = knob(
        "20", standard="5,20,50", full="1,5,10,20,50,100", help="prediction horizons h (events), comma-separated"
    )
    smooth_window: int = knob(10, low=1, high=100, help="TLOB labels' smoothing window w (w' = min(w, h))")
    fast_weight: float = knob(0.6, low=0.0, high=3.0, help="strength a_f of the regime-flipped fast signal")
    slow_weight: float = knob(0.4, low=0.0, high=3.0, help="strength a_s of the slow signal (deep in the book)")
    switch_prob: float = knob(0.005, low=0.0, high=0.5, help="regime switch probability per event")
    lr: float = knob(3e-3, standard=1e-3, full=1e-4, low=1e-6, high=1.0, log=True, help="Adam learning rate (TLOB)")
    mlplob_lr: float = knob(
        3e-3, standard=1e-3, full=3e-4, low=1e-6, high=1.0, log=True, main=False, help="Adam learning rate (MLPLOB)"
    )
    claim_horizon: int = knob(20, low=1, high=1000, main=False, help="horizon of the model claims (in horizons)")
    n_events: int = knob(
        20_000,
        standard=50_000,
        full=1_000_000,
        low=2_000,
        high=10_000_000,
        main=False,
        help="simulated events per seed",
    )
    seq_len: int = knob(32, full=128, low=4, high=1024, main=False, help="window length T")
    dim: int = knob(16, full=40, low=4, high=512, main=False, help="hidden width D (TLOB and MLPLOB)")
    n_layers: int = knob(2, full=4, low=1, high=8, main=False, help="pairs of (temporal, feature) blocks")
    heads: int = knob(1, low=1, high=8, main=False, help="attention heads")
    sinusoidal: bool = knob(False, full=True, main=False, help="sinusoidal positional encoding (else learned)")
    bin_norm: bool = knob(
        False,
        full=True,
        main=False,
        help="BiN input normalisation (paper); off: inputs are z-scored with training statistics, and BiN's z-score "
        "along time erases the slow signal's level inside a window",
    )
    epochs: int = knob(3, standard=5, full=10, low=1, high=100, main=False, help="training epochs")
    batch: int = knob(128, low=8, high=4096, main=False, help="minibatch size")
    ema_decay: float = knob(
        0.0,
        standard=0.99,
        full=0.999,
        low=0.0,
        high=0.9999,
        main=False,
        help="weight-EMA decay d (0 = off; the quick preset's ~80 steps are too few for it)",
    )
    train_stride: int = knob(
        4,
        full=1,
        low=1,
        high=64,
        main=False,
        help="keep every k-th training/validation window (they overlap by T − k events)",
    )
    spread_model: str = knob(
        "mlplob",
        standard="tlob",
        full="tlob",
        choices=("tlob", "mlplob"),
        main=False,
        help="model trained on the spread-threshold labels (MLPLOB at quick: cheaper)",
    )
    n_seeds: int = knob(
        3, standard=5, full=5, low=1, high=100, main=False, help="independent markets (seed, seed+1, …)"
    )

    def __post_init__(self):
        hs = parse_horizons(self.horizons)
        if self.claim_horizon not in hs:
            raise ValueError(f"claim_horizon={self.claim_horizon} must be one of horizons={self.horizons!r}")
        if self.seq_len % 4 or self.dim % 4:
            raise ValueError(f"seq_len={self.seq_len} and dim={self.dim} must be multiples of 4 (the last pair / 4)")
        if self.sinusoidal and self.dim % 2:
            raise ValueError(f"a sinusoidal encoding needs an even dim, got dim={self.dim}")
        smallest = int(0.15 * self.n_events)
        need = self.seq_len + max(max(hs), PROBE_CLAIM_HORIZON) + 100
        if smallest < need:
            raise ValueError(
                f"n_events={self.n_events}: a 15% split holds {smallest} events, fewer than seq_len + the largest "
                f"horizon + 100 = {need}"
            )


def parse_horizons(text: str) -> tuple[int, ...]:
    """``"5, 20"`` → ``(5, 20)``: distinct positive integers ≤ 1000, in increasing order."""
    try:
        hs = sorted({int(part) for part in str(text).split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"horizons={text!r}: expected comma-separated integers such as '5,20'") from None
    if not hs or hs[0] < 1 or hs[-1] > 1000:
        raise ValueError(f"horizons={text!r}: expected integers in [1, 1000]")
    return tuple(hs)


PARAMS = params_of(Knobs)
MAIN_METRIC = "val_macro_f1"

#: the horizons of the (data-only) horizon-bias probe, and the one its claim is checked at (the card's h = 50)
PROBE_HORIZONS = (5, 10, 20, 50, 100)
PROBE_CLAIM_HORIZON = 50
#: margins fixed from the card before any run: TLOB ≥ logistic + 0.06 and ≥ majority + 0.30 macro-F1 at h = 20;
#: the new labels agree with the late move ≥ 0.05 more often than the classic ones at h = 50
LOGISTIC_MARGIN = 0.06
MAJORITY_MARGIN = 0.30
PROBE_MARGIN = 0.05
#: the paper: an average-spread threshold "degrades performance": the F1 drop is > 0
SPREAD_MARGIN = 0.0
#: printed decimals: F1 after a few dozen Adam steps moves in the 3rd decimal across CPU kernels
F1_DECIMALS = 2
PROBE_DECIMALS = 3

MODELS = ("majority", "logistic", "TLOB", "MLPLOB")


# --- typed records -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """One model at one horizon: test macro-F1 per seed, and the confusion matrix summed over seeds (rows = true)."""

    model: str
    horizon: int
    f1: tuple[float, ...]
    confusion: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ProbeRow:
    """The horizon-bias probe at one horizon, per seed: agreement with the late move, and the class shares
    (down, stationary, up) on the training split under classic labels, TLOB's labels and TLOB's with θ = spread."""

    horizon: int
    classic: tuple[float, ...]
    tlob: tuple[float, ...]
    shares_classic: tuple[float, ...]
    shares_tlob: tuple[float, ...]
    shares_spread: tuple[float, ...]


@dataclass(frozen=True)
class SpreadRun:
    """The spread-threshold experiment at one horizon: θ of each labelling (per seed), test macro-F1 of the model
    trained on spread labels and of the majority class on them, and their stationary shares."""

    model: str
    horizon: int
    theta_mean_abs: tuple[float, ...]
    theta_spread: tuple[float, ...]
    f1_spread: tuple[float, ...]
    f1_majority_spread: tuple[float, ...]
    stationary_spread: tuple[float, ...]


@dataclass(frozen=True)
class AttentionMaps:
    """TLOB's first temporal (T × T) and feature (D × D) attention, averaged over heads and the test windows of
    each regime (index 0 / 1), first seed, claim horizon."""

    temporal: tuple[np.ndarray, np.ndarray]
    feature: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Example:
    """One window for the figures: standardised features (T, F) and the mid-prices over it and the horizon."""

    window: np.ndarray
    mid: np.ndarray
    seq_len: int
    horizon: int
    label: int


# --- the claims ----------------------------------------------------------------------------------------------------


def tlob_vs_logistic_claim(tlob_f1, logistic_f1, horizon: int, mlplob_f1=None) -> ClaimCheck:
    """Headline (the card's toy claim): dual-axis TLOB clearly beats a linear model of the last snapshot."""
    extra = None
    if mlplob_f1 is not None:
        extra = {"|TLOB − MLPLOB| (printed, not asserted)": abs(float(np.mean(tlob_f1)) - float(np.mean(mlplob_f1)))}
    return ClaimCheck.paired(
        f"TLOB beats logistic regression on the last snapshot by ≥ {LOGISTIC_MARGIN} macro-F1 (h = {horizon})",
        f"test macro-F1, TLOB − logistic, h = {horizon}, per seed",
        tlob_f1,
        logistic_f1,
        labels=("TLOB", "logistic"),
        margin=LOGISTIC_MARGIN,
        headline=True,
        numbers=extra,
        detail=nonfinite_note(tlob_f1, logistic_f1),
        decimals=F1_DECIMALS,
    )


def tlob_vs_majority_claim(tlob_f1, majority_f1, horizon: int) -> ClaimCheck:
    """Supporting: far above the majority class (macro-F1 ≈ 1/6 for a near-balanced three-class problem)."""
    return ClaimCheck.paired(
        f"TLOB beats the majority class by ≥ {MAJORITY_MARGIN} macro-F1 (h = {horizon})",
        f"test macro-F1, TLOB − majority, h = {horizon}, per seed",
        tlob_f1,
        majority_f1,
        labels=("TLOB", "majority"),
        margin=MAJORITY_MARGIN,
        detail=nonfinite_note(tlob_f1, majority_f1),
        decimals=F1_DECIMALS,
    )


def probe_claim(tlob_agreement, classic_agreement, horizon: int = PROBE_CLAIM_HORIZON) -> ClaimCheck:
    """Supporting (data only): TLOB's labels describe the move at the horizon better than the classic labels."""
    return ClaimCheck.paired(
        f"TLOB's labels agree with the late move more often than the classic labels (h = {horizon})",
        f"share of non-stationary labels with the sign of m(t+h) − m(t+h/4), TLOB − classic, h = {horizon}",
        tlob_agreement,
        classic_agreement,
        labels=("TLOB labels", "classic labels"),
        margin=PROBE_MARGIN,
        detail=nonfinite_note(tlob_agreement, classic_agreement),
        decimals=PROBE_DECIMALS,
    )


def spread_claim(f1_mean_abs, f1_spread, model: str, horizon: int) -> ClaimCheck:
    """Supporting (the paper): defining trends with the average spread as θ degrades macro-F1."""
    return ClaimCheck.paired(
        f"{model}'s macro-F1 drops when the trend threshold is the average spread (h = {horizon})",
        f"test macro-F1 of {model}, θ = mean|ℓ|/2 − θ = spread, h = {horizon}, per seed",
        f1_mean_abs,
        f1_spread,
        labels=("θ = mean|ℓ|/2", "θ = spread"),
        margin=SPREAD_MARGIN,
        detail=nonfinite_note(f1_mean_abs, f1_spread),
        decimals=F1_DECIMALS,
    )


# --- the pieces of one seed -------------------------------------------------------------------------------------


def confusion(y_true, y_pred, n: int = 3) -> np.ndarray:
    """Counts ``(n, n)``, rows = true class, columns = predicted."""
    out = np.zeros((n, n), dtype=np.int64)
    np.add.at(out, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return out


def majority_predict(data: lobs.LabelledLOB) -> np.ndarray:
    """The training split's most frequent class, for every test window."""
    return np.full(len(data.test.labels), np.bincount(data.train.labels, minlength=3).argmax())


def logistic_predict(data: lobs.LabelledLOB) -> np.ndarray:
    """Multinomial logistic regression on the last snapshot of each window (40 standardised features)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=500).fit(data.x[data.train.ends], data.train.labels)
    return clf.predict(data.x[data.test.ends])


def make_model(name: str, p: Knobs, n_features: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == "TLOB":
        model = TLOB(n_features, p.seq_len, p.dim, p.n_layers, p.heads, p.sinusoidal)
    else:
        model = MLPLOB(n_features, p.seq_len, p.dim, p.n_layers)
    if not p.bin_norm:
        model.norm = torch.nn.Identity()
    return model


def fit_and_score(ctx: RunContext[Knobs], name: str, data: lobs.LabelledLOB, seed: int, series: str, bar):
    """Train one model on ``data`` (history under ``series``, one row per seed; a divergence names ``series`` and the
    seed), return (test predictions, the kept model)."""
    p, x, where = ctx.p, torch.from_numpy(data.x), f"{series} seed {seed}"
    model = make_model(name, p, data.x.shape[1], seed)
    val_ends = data.val.ends[:: p.train_stride]
    val_labels = data.val.labels[:: p.train_stride]

    def on_step(step, loss):
        ctx.check(loss, step, where)
        bar.update(1)

    def on_epoch(log: EpochLog, net):
        ctx.check_weights(net, log.epoch, where)
        for metric in ("train_loss", "val_loss"):
            ctx.history.log(log.epoch, series, metric, getattr(log, metric), seed=seed)
        ctx.history.log(log.epoch, series, MAIN_METRIC, log.val_f1, seed=seed)

    best, _ = train_trend_model(
        model,
        x,
        (data.train.ends, data.train.labels),
        (val_ends, val_labels),
        seq_len=p.seq_len,
        epochs=p.epochs,
        lr=p.lr if name == "TLOB" else p.mlplob_lr,
        batch=p.batch,
        ema_decay=p.ema_decay,
        seed=seed,
        on_step=on_step,
        on_epoch=on_epoch,
    )
    ctx.check_weights(best, p.epochs, where)
    return predict(best, x, data.test.ends, p.seq_len).argmax(-1).numpy(), best


def probe_rows(market: lobs.LOB, w: int) -> list[tuple]:
    """Per probe horizon: (agreement classic, agreement TLOB, shares classic, TLOB, TLOB-spread) on the training
    split, each labelling with its own θ from that split."""
    a, b = lobs.chronological_splits(len(market.mid))[0]
    mid = market.mid[a:b]
    theta_spread = lobs.spread_threshold(market.spread[a:b], mid)
    rows = []
    for h in PROBE_HORIZONS:
        classic, new = lobs.classic_returns(mid, h), lobs.tlob_returns(mid, h, w)
        lab_c = lobs.classify(classic, lobs.mean_abs_threshold(classic))
        lab_n = lobs.classify(new, lobs.mean_abs_threshold(new))
        lab_s = lobs.classify(new, theta_spread)
        rows.append(
            (
                lobs.late_move_agreement(mid, lab_c, h),
                lobs.late_move_agreement(mid, lab_n, h),
                *(class_shares(lab) for lab in (lab_c, lab_n, lab_s)),
            )
        )
    return rows


def class_shares(labels: np.ndarray) -> np.ndarray:
    kept = labels[labels >= 0]
    return np.bincount(kept, minlength=3) / max(len(kept), 1)


@torch.no_grad()
def attention_maps(model: TLOB, data: lobs.LabelledLOB, regime: np.ndarray, seq_len: int) -> AttentionMaps:
    """Average the first temporal and first feature attention over heads and the test windows of each regime."""
    ends = data.test.ends[:1024]
    model.eval()
    model(lobs.gather_windows(torch.from_numpy(data.x), ends, seq_len), keep_attention=True)
    temporal, feature = model.attention[0].mean(1).numpy(), model.attention[1].mean(1).numpy()  # (B, N, N)
    reg = regime[ends]
    pick = [reg == r if (reg == r).any() else np.ones_like(reg, bool) for r in (0, 1)]
    return AttentionMaps(tuple(temporal[m].mean(0) for m in pick), tuple(feature[m].mean(0) for m in pick))


# --- the experiment ------------------------------------------------------------------------------------------------


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    horizons, seeds = parse_horizons(p.horizons), ctx.seeds(p.n_seeds)
    n_train = int(0.7 * p.n_events) // p.train_stride
    steps = len(seeds) * p.epochs * -(-n_train // p.batch) * (2 * len(horizons) + 1)
    bar = ctx.bar(steps, f"TLOB + MLPLOB, {len(horizons)} horizon(s) × {len(seeds)} seeds (+ spread θ)")
    f1 = {(m, h): [] for m in MODELS for h in horizons}
    conf = {(m, h): np.zeros((3, 3), np.int64) for m in MODELS for h in horizons}
    probes, spread, attention, example = [], [], None, None
    for seed in seeds:
        market = lobs.simulate_lob(
            p.n_events, seed, fast_weight=p.fast_weight, slow_weight=p.slow_weight, switch_prob=p.switch_prob
        )
        probes.append(probe_rows(market, p.smooth_window))
        for h in horizons:
            data = lobs.label_lob(market, h, p.seq_len, w=p.smooth_window, train_stride=p.train_stride)
            preds = {"majority": majority_predict(data), "logistic": logistic_predict(data)}
            for name in ("TLOB", "MLPLOB"):
                preds[name], model = fit_and_score(ctx, name, data, seed, f"{name} h={h}", bar)
                if name == "TLOB" and h == p.claim_horizon and attention is None:
                    attention = attention_maps(model, data, market.regime, p.seq_len)
                    t = int(data.test.ends[0])
                    example = Example(
                        data.x[t - p.seq_len + 1 : t + 1],
                        market.mid[t - p.seq_len + 1 : t + h + 1],
                        p.seq_len,
                        h,
                        int(data.test.labels[0]),
                    )
            for name, pred in preds.items():
                f1[name, h].append(macro_f1(data.test.labels, pred))
                conf[name, h] += confusion(data.test.labels, pred)
        h = p.claim_horizon
        data = lobs.label_lob(market, h, p.seq_len, w=p.smooth_window, threshold="spread", train_stride=p.train_stride)
        model_name = "TLOB" if p.spread_model == "tlob" else "MLPLOB"
        pred, _ = fit_and_score(ctx, model_name, data, seed, f"{model_name} h={h} θ=spread", bar)
        default = lobs.label_lob(market, h, p.seq_len, w=p.smooth_window)
        spread.append(
            (
                default.theta,
                data.theta,
                macro_f1(data.test.labels, pred),
                macro_f1(data.test.labels, majority_predict(data)),
                float(np.mean(data.test.labels == 1)),
            )
        )
    bar.close()
    scores = [Scores(m, h, tuple(f1[m, h]), tuple(map(tuple, conf[m, h].tolist()))) for h in horizons for m in MODELS]
    probe = [
        ProbeRow(
            h,
            *(tuple(np.array([s[k][j] for s in probes]).tolist()) for j in range(2)),
            *(tuple(np.mean([s[k][j] for s in probes], axis=0).tolist()) for j in range(2, 5)),
        )
        for k, h in enumerate(PROBE_HORIZONS)
    ]
    model_name = "TLOB" if p.spread_model == "tlob" else "MLPLOB"
    spread_run = SpreadRun(model_name, p.claim_horizon, *(tuple(float(s[j]) for s in spread) for j in range(5)))
    hc, k50 = p.claim_horizon, PROBE_HORIZONS.index(PROBE_CLAIM_HORIZON)
    claims = [
        tlob_vs_logistic_claim(f1["TLOB", hc], f1["logistic", hc], hc, f1["MLPLOB", hc]),
        tlob_vs_majority_claim(f1["TLOB", hc], f1["majority", hc], hc),
        probe_claim(probe[k50].tlob, probe[k50].classic),
        spread_claim(f1[model_name, hc], spread_run.f1_spread, model_name, hc),
    ]
    metrics = {f"f1_{m.lower()}_h{h}": float(np.mean(f1[m, h])) for m in MODELS for h in horizons}
    metrics |= {
        f"probe_{kind}_h{r.horizon}": float(np.mean(getattr(r, kind))) for r in probe for kind in ("classic", "tlob")
    }
    metrics["f1_spread_threshold"] = float(np.mean(spread_run.f1_spread))
    extras = {
        "scores": scores,
        "probe": probe,
        "spread": spread_run,
        "attention": attention,
        "example": example,
        "horizons": horizons,
        "seeds": list(seeds),
    }
    return Outcome(metrics=metrics, claims=claims, extras=extras)

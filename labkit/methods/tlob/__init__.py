"""27 · TLOB (arXiv 2502.15757): a transformer with dual attention (over time steps and over features) for
limit-order-book price-trend prediction, with the all-MLP twin MLPLOB and labels without horizon bias.

``method`` holds the paper (the blocks, both models, macro-F1 and the training loop), ``experiment`` the knobs, the
claims and ``run``, ``figures`` the plots; the order-book simulator and the labels are in
:mod:`labkit.substrates.lob`.
"""

from .experiment import (
    MAIN_METRIC,
    MODELS,
    PARAMS,
    PROBE_HORIZONS,
    AttentionMaps,
    Knobs,
    ProbeRow,
    Scores,
    SpreadRun,
    parse_horizons,
    probe_claim,
    run,
    spread_claim,
    tlob_vs_logistic_claim,
    tlob_vs_majority_claim,
)
from .figures import make_figures
from .method import (
    MLPLOB,
    TLOB,
    AttentionBlock,
    BiN,
    EpochLog,
    MLPBlock,
    WeightEMA,
    classifier_head,
    macro_f1,
    predict,
    sinusoidal_encoding,
    train_trend_model,
)

__all__ = [
    "MAIN_METRIC",
    "MLPLOB",
    "MODELS",
    "PARAMS",
    "PROBE_HORIZONS",
    "TLOB",
    "AttentionBlock",
    "AttentionMaps",
    "BiN",
    "EpochLog",
    "Knobs",
    "MLPBlock",
    "ProbeRow",
    "Scores",
    "SpreadRun",
    "WeightEMA",
    "classifier_head",
    "macro_f1",
    "make_figures",
    "parse_horizons",
    "predict",
    "probe_claim",
    "run",
    "sinusoidal_encoding",
    "spread_claim",
    "tlob_vs_logistic_claim",
    "tlob_vs_majority_claim",
    "train_trend_model",
]

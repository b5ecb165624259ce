"""30 · SSL recsys (arXiv 2007.12865): a contrastive item-feature task with correlated feature masking, added to a
two-tower retriever, helps the long tail.

``method`` holds the paper (mutual information, RFM / CFM masks, the SSL loss, the training loop), ``experiment`` the
knobs, the long-tailed catalogue per seed, the arms, the claims and ``run``, ``figures`` the plots. The two-tower model
and the in-batch softmax with logQ correction live in :mod:`labkit.substrates.recsys`.
"""

from labkit.substrates.recsys import in_batch_softmax_loss

from .experiment import (
    BUCKET_MARGIN,
    MAIN_METRIC,
    PARAMS,
    RECALL_MARGIN,
    ArmOutcome,
    ArmSpec,
    DataSummary,
    Knobs,
    bucket_gain_claim,
    early_stopped_claim,
    hits_at_k,
    item_ranks,
    make_arms,
    make_problem,
    neighbour_purity,
    recall_gain_claim,
    relative_gain,
    run,
)
from .figures import make_figures
from .method import (
    cfm_mask_table,
    complementary_views,
    correlated_feature_masks,
    multitask_loss,
    mutual_information,
    mutual_information_matrix,
    pair_scores,
    random_feature_masks,
    ssl_contrastive_loss,
    train_two_towers,
)

__all__ = [
    "BUCKET_MARGIN",
    "MAIN_METRIC",
    "PARAMS",
    "RECALL_MARGIN",
    "ArmOutcome",
    "ArmSpec",
    "DataSummary",
    "Knobs",
    "bucket_gain_claim",
    "cfm_mask_table",
    "early_stopped_claim",
    "complementary_views",
    "correlated_feature_masks",
    "hits_at_k",
    "in_batch_softmax_loss",
    "item_ranks",
    "make_arms",
    "make_figures",
    "make_problem",
    "multitask_loss",
    "mutual_information",
    "mutual_information_matrix",
    "neighbour_purity",
    "pair_scores",
    "random_feature_masks",
    "recall_gain_claim",
    "relative_gain",
    "run",
    "ssl_contrastive_loss",
    "train_two_towers",
]

"""labkit's DPO and RPO losses against TRL's DPOTrainer on identical log-probabilities.

TRL computes its losses inside ``DPOTrainer._compute_loss(model, inputs)`` from the per-token
log-probs the model returns. We call that method with a stand-in trainer (only the attributes the
loss reads) and a stand-in model that returns fixed per-token log-probs, so TRL's own arithmetic runs
on numbers we chose, then compare with ``labkit.methods.rpo``. TRL is a test-only dependency.
"""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from labkit.methods.rpo import dpo_loss, rpo_average_loss

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer", reason="TRL is the reference; `pip install -e .[dev]`")

PAIRS, TOKENS = 4, 6


def fake_trainer(beta, loss_types, loss_weights):
    """Just the attributes ``_compute_loss`` reads, with a one-process accelerator."""
    identity = lambda x: x  # noqa: E731
    return SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device="cpu", gather=identity, gather_for_metrics=identity),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=loss_weights,
        beta=beta,
        use_weighting=False,
        label_smoothing=0.0,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )


def fake_batch(lengths_chosen, lengths_rejected, seed=0):
    """Per-token log-probs (zero outside each completion) and TRL's inputs for [chosen; rejected]."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths_chosen + lengths_rejected)
    shift_mask = (torch.arange(TOKENS).expand(2 * PAIRS, TOKENS) < lengths[:, None]).long()
    per_token = -torch.rand(2 * PAIRS, TOKENS, generator=gen) * 3 * shift_mask
    completion_mask = torch.cat([torch.zeros(2 * PAIRS, 1, dtype=torch.long), shift_mask], dim=1)  # prompt token
    ref = -torch.rand(2 * PAIRS, generator=gen) * 10
    inputs = {
        "input_ids": torch.ones(2 * PAIRS, TOKENS + 1, dtype=torch.long),
        "attention_mask": completion_mask,
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref[:PAIRS],
        "ref_rejected_logps": ref[PAIRS:],
    }
    return per_token, inputs, ref


def trl_loss(trainer, per_token, inputs):
    zeros = torch.zeros_like(per_token)
    model = lambda **kw: SimpleNamespace(
        log_probs=per_token,
        entropy=zeros,
        mean_logits=zeros,  # noqa: E731
        is_top1=zeros.bool(),
    )
    return trl_dpo.DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_loss_equals_trl_sigmoid_loss(beta):
    per_token, inputs, ref = fake_batch([6, 4, 5, 2], [3, 6, 1, 5])
    expected = trl_loss(fake_trainer(beta, ["sigmoid"], [1.0]), per_token, inputs)
    logps = per_token.sum(1)
    ours = dpo_loss(logps[:PAIRS], logps[PAIRS:], ref[:PAIRS], ref[PAIRS:], beta).mean()
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_average_rpo_equals_trl_sigmoid_plus_weighted_sft(alpha):
    """TRL's RPO is loss_type=["sigmoid", "sft"] with weights [1, α]; its SFT term is the mean NLL over all
    chosen tokens of the batch, which equals labkit's per-sequence token mean when the chosen responses
    have one length (with unequal lengths TRL weights long responses more)."""
    per_token, inputs, ref = fake_batch([5, 5, 5, 5], [3, 6, 1, 5], seed=1)
    expected = trl_loss(fake_trainer(0.1, ["sigmoid", "sft"], [1.0, alpha]), per_token, inputs)
    logps = per_token.sum(1)
    lengths = torch.full((PAIRS,), 5.0)
    ours = rpo_average_loss(logps[:PAIRS], logps[PAIRS:], ref[:PAIRS], ref[PAIRS:], 0.1, alpha, lengths).mean()
    torch.testing.assert_close(ours, expected)

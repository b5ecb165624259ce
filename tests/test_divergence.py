"""Divergence, per method: a learning rate that really blows training up must stop the run with the step and the
series named, and record nothing (EnsLoss marks a diverged arm instead; it stops only when every arm diverged).

Each case runs the method's own ``run()`` (the same entry point as the notebook, the CLI and the app) with a huge
learning rate. The knobs refuse such a value at every front end (learning rates stop at 1 or 10), so the test lifts
the range check, and only the range check: the value still goes through the same parsing and cross-field checks.
The weights check matters as much as the NaN check: DPO-style losses saturate instead of overflowing, so at
lr = 1e12 RPO, DAA, INPO and SuperHF ran to the end with finite losses and weights of 1e11 and were recorded.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

import labkit.core.params as params_module
from labkit.core import WEIGHT_LIMIT, DivergenceError, check_arms, check_weights, get_method
from labkit.core.store import RunStore

HUGE = 1e12

#: (method, overrides that make it diverge (and keep it short), the series the error must name)
CASES = [
    ("a_lol", {"sft_lr": HUGE}, "SFT seed 0"),
    ("a_lol", {"lr": HUGE, "sft_steps": 20, "value_steps": 20}, "NLL (seed 0)"),
    ("fedld", {"lr": HUGE}, "FedAvg"),
    ("rffl", {"lr": HUGE}, "standalone"),
    ("rpo", {"lr": HUGE}, "DPO"),
    ("daa_overoptimization", {"lr": HUGE}, "DPO β=0.01"),
    ("inpo", {"lr": HUGE}, "INPO"),
    ("rm_ensembles", {"rm_lr": HUGE}, "reward model"),
    ("superhf", {"sft_lr": HUGE}, "SFT π_0 seed 0"),
    ("superhf", {"lr": HUGE, "sft_steps": 20}, "SuperHF β_KL=0"),
    ("ear", {"lr": HUGE}, "encoder"),
    ("bang", {"lr": HUGE}, "pre-train θ_0"),
    ("tempnet", {"tempnet_lr": HUGE}, "TempNet seed 0"),
    ("tempnet", {"lm_lr": HUGE}, "LM + CE (τ = 1) seed 0"),
    ("llm_adapters", {"lr_adapter": HUGE, "n_seeds": 1}, "Series after MLP (r=16)"),
    ("ailboost", {"disc_lr": HUGE, "n_rounds": 2}, "AILBoost seed 0 discriminator"),
    ("lol_decoding", {"lr": HUGE}, "original seed 0"),
    ("netllm", {"lr": HUGE}, "NetLLM (pre-trained LM + LoRA) (seed 0)"),
    ("lamo", {"lr": HUGE, "lm_lr": HUGE, "n_seeds": 1, "eval_episodes": 2}, "LaMo seed 0 action loss"),
    ("dual_rl", {"recoil_lr": HUGE}, "ReCOIL β=0.2 seed 0"),
    ("dual_rl", {"dvl_lr": HUGE, "recoil_steps": 10}, "IQL τ=0.8 seed 0"),
    ("vagram", {"lr": HUGE, "n_seeds": 1}, "MSE (MLE) D=0 seed 0"),
    ("archer", {"critic_lr": HUGE, "actor_lr": HUGE, "n_seeds": 1}, "ArCHer q loss"),
    ("regret_loss", {"lr": HUGE, "n_seeds": 1, "n_steps": 3}, "transformer · regret-loss, seed 0"),
    ("ad_survival", {"lr": HUGE}, "two-term + CTR seed 0"),
    ("tlob", {"lr": HUGE}, "TLOB h=20 seed 0"),
    ("lol_prf", {"lr": HUGE, "n_seeds": 1, "epochs": 2}, "PRF (λ_cr=0)"),
    ("ssl_recsys", {"lr": HUGE}, "two-tower seed 0"),
    ("recsys_extraction", {"lr": HUGE, "n_seeds": 1}, "victim seed 0"),
]


@pytest.fixture
def without_range_checks(monkeypatch):
    """Values are still parsed and type-checked; only the [low, high] range is lifted."""
    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "runs.sqlite"
    monkeypatch.setenv("LABKIT_STORE", str(path))
    return RunStore(path)


@pytest.mark.slow
@pytest.mark.parametrize(("slug", "overrides", "series"), CASES, ids=[f"{c[0]}-{next(iter(c[1]))}" for c in CASES])
def test_a_huge_learning_rate_stops_the_run_naming_step_and_series(
    slug, overrides, series, without_range_checks, store
):
    with pytest.raises(DivergenceError, match=rf"at step \d+ in {re.escape(repr(series))}"):
        get_method(slug).load().run("quick", progress=False, record=True, **overrides)
    assert len(store.runs()) == 0  # nothing recorded


@pytest.mark.slow
def test_ensloss_marks_diverged_arms_and_stops_only_when_every_arm_diverged(without_range_checks, store):
    ensloss = get_method("ensloss").load()
    with pytest.raises(DivergenceError, match=r"every arm diverged on every seed .* at step \d+"):
        ensloss.run("quick", progress=False, record=True, lr=HUGE, epochs=3)
    assert len(store.runs()) == 0


def test_the_range_check_is_what_refuses_a_huge_learning_rate():
    """Without the fixture the same value never reaches training: refused before any work."""
    with pytest.raises(ValueError, match=r"lr=1000000000000.0 is out of range"):
        get_method("rpo").load().run("quick", progress=False, record=False, lr=HUGE)


# ------------------------------------------------------------------ the checks themselves, on hand-made cases


def test_check_weights_names_step_and_series_and_passes_sane_weights():
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(0.5)
        layer.bias.fill_(-2.0)
    assert check_weights(layer, 1, "a") == 2.0
    with torch.no_grad():
        layer.bias[0] = 2 * WEIGHT_LIMIT
    with pytest.raises(DivergenceError, match=r"weights became 2e\+06 at step 9 in 'arm'"):
        check_weights([layer], 9, "arm")
    with torch.no_grad():
        layer.bias[0] = float("nan")
    with pytest.raises(DivergenceError, match=r"weights became nan at step 3"):
        check_weights(layer, 3)


def test_check_arms_names_the_first_bad_arm():
    names = ["DPO", "RPO η=1", "RPO η=5"]
    losses = torch.tensor([[0.5, 0.4], [0.3, 0.2], [0.1, 0.1]])  # (A, S)
    theta = torch.ones(3, 2, 4)  # (A, S, d)
    check_arms(losses, 1, names, weights=[theta])  # all sane
    theta[2, 1, 0] = 5e6
    with pytest.raises(DivergenceError, match=r"weights became 5e\+06 at step 4 in 'RPO η=5'"):
        check_arms(losses, 4, names, weights=[theta])
    losses[1, 0] = math.inf
    with pytest.raises(DivergenceError, match=r"loss became inf at step 4 in 'RPO η=1'"):
        check_arms(losses, 4, names, weights=[theta])

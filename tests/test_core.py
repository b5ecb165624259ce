"""The shared machinery: params and presets, the runner, results, divergence, device, store, registry."""

import importlib.util
import subprocess
import sys

import pandas as pd
import pytest
import torch

import labkit
from labkit.core import (
    METHODS,
    ClaimCheck,
    DivergenceError,
    Outcome,
    Param,
    get_method,
    method_run,
    overrides_from,
    pick_device,
    resolve_params,
)
from labkit.core.params import param_table, parse_assignments
from labkit.core.registry import FAMILIES, markdown_table
from labkit.core.store import RunStore

PARAMS = [
    Param("lr", float, 0.1, standard=0.05, low=0.0, high=1.0, help="step size"),
    Param("steps", int, 5, standard=20, low=1, high=1000),
    Param("arm", str, "a", choices=("a", "b")),
    Param("blow_up_at", int, 0, low=0, high=1000, main=False, help="make the loss NaN at this step (tests)"),
]


@method_run(PARAMS)
def toy_run(ctx):
    """Minimise (w - 3)^2 by gradient descent; logs the loss."""
    w = torch.zeros(1, device=ctx.device)
    for step in range(1, ctx.p.steps + 1):
        loss = ((w - 3.0) ** 2).sum()
        if step == ctx.p.blow_up_at:
            loss = loss * float("nan")
        ctx.check(loss, step, ctx.p.arm)
        w -= ctx.p.lr * 2 * (w - 3.0)
        ctx.history.log(step, ctx.p.arm, "loss", float(loss), seed=ctx.seed)
    final = float(((w - 3.0) ** 2).sum())
    return Outcome(
        metrics={"final_loss": final},
        claims=[ClaimCheck("loss goes down", "initial − final loss", [9.0 - final], margin=1.0, headline=True)],
    )


# --- params -------------------------------------------------------------------------------------


def test_preset_values_and_defaults():
    assert resolve_params(PARAMS, "quick") == {"lr": 0.1, "steps": 5, "arm": "a", "blow_up_at": 0}
    assert resolve_params(PARAMS, "standard")["lr"] == 0.05
    assert resolve_params(PARAMS, "full")["steps"] == 5  # full falls back to quick when not given


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lrr": 0.1}, "unknown parameter 'lrr' (did you mean 'lr'?)"),
        ({"lr": 2.0}, "out of range: expected a number from 0 to 1"),
        ({"lr": -0.5}, "out of range"),
        ({"lr": float("nan")}, "lr=nan is not allowed"),
        ({"steps": 2.5}, "wrong type (float): expected a whole number"),
        ({"steps": "many"}, "'many' is not a valid value: expected a whole number"),
        ({"arm": "c"}, "expected one of ['a', 'b']"),
        ({"lr": True}, "wrong type (bool)"),
    ],
)
def test_bad_values_say_what_is_allowed(overrides, message):
    with pytest.raises(ValueError) as err:
        resolve_params(PARAMS, "quick", overrides)
    assert message in str(err.value)


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match=r"unknown preset 'fast': choose one of \['quick', 'standard', 'full'\]"):
        resolve_params(PARAMS, "fast")


def test_text_values_are_parsed_like_the_cli_gives_them():
    got = resolve_params(PARAMS, "quick", parse_assignments(["lr=0.25", "steps=7", "arm=b"]))
    assert got == {"lr": 0.25, "steps": 7, "arm": "b", "blow_up_at": 0}
    assert resolve_params([Param("flag", bool, False)], "quick", {"flag": "yes"}) == {"flag": True}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_assignments(["lr"])


def test_a_param_whose_preset_value_is_out_of_range_is_refused_at_definition():
    with pytest.raises(ValueError, match="out of range"):
        Param("lr", float, 5.0, high=1.0)


def test_overrides_from_namespace_keeps_only_set_params():
    assert overrides_from(PARAMS, {"lr": 0.2, "steps": None, "other": 1}) == {"lr": 0.2}


def test_param_table_lists_every_param():
    table = param_table(PARAMS)
    assert list(table["name"]) == ["lr", "steps", "arm", "blow_up_at"]
    assert table.loc[0, "standard"] == 0.05


# --- runner and results ---------------------------------------------------------------------------


def test_run_returns_a_tidy_result():
    res = toy_run(preset="quick", seed=3, device="cpu", progress=False, record=False)
    assert res.method == "test_core" and res.seed == 3 and res.device == "cpu"
    assert list(res.history.columns) == ["seed", "step", "series", "metric", "value"]
    assert len(res.history) == 5 and set(res.history["seed"]) == {3}
    # gradient descent on (w-3)^2 with lr 0.1 from w=0: loss_k = 9 * 0.8^(2(k-1))
    assert res.history["value"].tolist() == pytest.approx([9 * 0.64**k for k in range(5)])
    assert res.metrics["final_loss"] == pytest.approx(9 * 0.64**5)
    assert res.claims_hold and "HOLDS" in res.summary()


def test_run_validates_before_doing_anything():
    with pytest.raises(ValueError, match="unknown parameter"):
        toy_run(nope=1)
    with pytest.raises(ValueError, match="seed"):
        toy_run(seed=-1)
    with pytest.raises(ValueError, match="unknown device"):
        toy_run(device="tpu")


def test_callback_sees_each_history_row_live():
    seen = []
    toy_run(callback=seen.append, progress=False, record=False)
    assert [r["step"] for r in seen] == [1, 2, 3, 4, 5]


def test_nan_loss_stops_with_the_step_and_leaves_no_record(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_STORE", str(tmp_path / "runs.sqlite"))
    with pytest.raises(DivergenceError, match=r"became nan at step 3 in 'a'"):
        toy_run(blow_up_at=3, record=True, progress=False)
    assert RunStore().runs().empty


def test_headline_claim_comes_first_and_decides_claims_hold():
    res = toy_run(progress=False, record=False)
    assert res.headline is res.claims[0] and res.verdict.value == "holds" and res.claims_hold
    lost = toy_run(progress=False, record=False, lr=0.0)  # w never moves: the loss does not go down
    assert lost.verdict.value == "does not hold" and not lost.claims_hold
    assert "[DOES NOT HOLD] (headline) loss goes down" in lost.summary()


def test_knobs_dataclass_gives_params_and_typed_access():
    from dataclasses import dataclass

    from labkit.core import knob, params_of

    @dataclass(frozen=True)
    class Knobs:
        lr: float = knob(0.1, standard=0.05, low=0.0, high=1.0, help="step size")
        steps: int = knob(3, low=1, high=10)

    assert [(p.name, p.type, p.value_for("standard")) for p in params_of(Knobs)] == [
        ("lr", float, 0.05),
        ("steps", int, 3),
    ]
    seen = {}

    @method_run(Knobs)
    def body(ctx):
        seen["p"] = ctx.p
        return Outcome(metrics={}, claims=[])

    body(preset="standard", steps=4, progress=False, record=False)
    assert isinstance(seen["p"], Knobs) and seen["p"].lr == 0.05 and seen["p"].steps == 4
    assert body.PARAMS[0].name == "lr"


def test_seeding_makes_runs_repeatable():
    @method_run([Param("n", int, 3, low=1, high=10)])
    def noisy(ctx):
        x = torch.randn(ctx.p.n)
        return Outcome(metrics={"sum": float(x.sum())}, claims=[])

    assert noisy(seed=1).metrics == noisy(seed=1).metrics != noisy(seed=2).metrics


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


# --- store ----------------------------------------------------------------------------------------


def test_store_round_trip(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    res = toy_run(seed=2, progress=False, record=False)
    run_id = store.save(res, notebook="nb.ipynb")
    runs = store.runs("test_core")
    assert len(runs) == 1 and runs.loc[0, "id"] == run_id
    assert runs.loc[0, "params"] == res.params and runs.loc[0, "notebook"] == "nb.ipynb"
    assert runs.loc[0, "claims"][0]["claim"] == "loss goes down" and runs.loc[0, "claims_hold"]
    assert runs.loc[0, "verdict"] == "holds" and runs.loc[0, "claims"][0]["values"] == [pytest.approx(9 - 9 * 0.64**5)]
    pd.testing.assert_frame_equal(store.history(run_id), res.history, check_dtype=False)


def test_store_writes_all_or_nothing(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    res = toy_run(progress=False, record=False)
    res.history = res.history.astype({"value": object})
    res.history.loc[len(res.history) - 1, "value"] = "not a number"  # fails at the last history row
    with pytest.raises(ValueError):
        store.save(res)
    assert store.runs().empty


def test_record_via_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_STORE", str(tmp_path / "s.sqlite"))
    monkeypatch.setenv("LABKIT_RECORD", "1")
    monkeypatch.setenv("LABKIT_NOTEBOOK", "/x/out.ipynb")
    toy_run(progress=False)
    assert RunStore().runs()["notebook"].tolist() == ["/x/out.ipynb"]


# --- registry -------------------------------------------------------------------------------------


def test_registry_lists_all_thirty_methods():
    assert [m.id for m in METHODS] == list(range(1, 31))
    assert len({m.slug for m in METHODS}) == 30
    assert all(m.family in FAMILIES for m in METHODS)
    assert all(len(m.arxiv.split(".")) == 2 and m.arxiv[:4].isdigit() for m in METHODS)


def test_registry_lookup(monkeypatch):
    assert get_method("rpo").id == 8 and get_method(8).slug == "rpo" and get_method("08").slug == "rpo"
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")
    assert all(m.available for m in METHODS)  # all thirty are written: hide one package to check the refusal
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n.endswith(".tlob") else real(n, *a))
    with pytest.raises(ValueError, match="not available yet"):
        get_method("tlob").load()


def test_available_methods_have_a_module_and_a_notebook_pair():
    from labkit.core.registry import REPO_ROOT

    for m in labkit.available_methods():
        module = m.load()
        assert callable(module.run) and module.PARAMS
        assert (REPO_ROOT / m.notebook).exists() and (REPO_ROOT / m.notebook).with_suffix(".ipynb").exists()


def test_markdown_table_has_a_row_per_method():
    rows = markdown_table().splitlines()[2:]
    assert len(rows) == 30 and rows[7].startswith("| 08 |")


def test_import_labkit_is_cheap():
    code = "import sys, labkit; print(any(m in sys.modules for m in ('torch', 'pandas', 'plotly')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""The interactive front ends without a browser: Param → control rules, ipywidgets forms and the
explorer, the Panel form builder, the app's gallery and method page.

A tiny fake method (``toy``) stands in for the real ones, so these tests do not depend on which
methods exist; the last tests build forms for every method that is available.
"""

import asyncio
import html as html_lib
import math
import subprocess
import sys
import types

import ipywidgets as ipw
import panel
import pytest

import labkit
from labkit.core import ClaimCheck, Outcome, Param, method_run
from labkit.core.store import RunStore
from widgets import forms, panel_forms
from widgets.forms import LiveCurves, control_spec, explorer, param_controls, preset_dropdown

TOY_PARAMS = [
    Param("lr", float, 0.1, standard=0.2, low=1e-3, high=1.0, log=True, help="step size"),
    Param("steps", int, 20, standard=40, low=1, high=500, help="steps per arm"),
    Param("arm", str, "a", full="b", choices=("a", "b")),
    Param("noise", float, 0.0, low=0.0, help="no upper bound: a number box"),
    Param("hidden", int, 8, low=1, high=64, main=False),
]


def make_toy():
    """A fake method module ``toy``: two series decaying geometrically, logged every step."""
    toy = types.ModuleType("toy")
    toy.on_step = None  # a test may set a probe called at step 10

    def body(ctx):
        value = 1.0
        for step in range(1, ctx.p.steps + 1):
            value *= 1 - ctx.p.lr
            ctx.history.log(step, "method", "loss", value + ctx.p.noise, seed=ctx.seed)
            ctx.history.log(step, "baseline", "loss", value + 0.1, seed=ctx.seed)
            ctx.history.log(step, "method", "acc", 1 - value, seed=ctx.seed)
            if step == 10 and toy.on_step is not None:
                toy.on_step()
        return Outcome(
            metrics={"loss": value},
            claims=[ClaimCheck("method beats baseline", "0.1 − noise", [0.1 - ctx.p.noise], margin=0.0, headline=True)],
        )

    body.__module__ = "fake.toy"  # method_run names the method after the module: "toy"
    toy.PARAMS = TOY_PARAMS
    toy.run = method_run(TOY_PARAMS)(body)
    return toy


@pytest.fixture
def toy():
    return make_toy()


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A run store in a temporary file, also the default for runs recorded during the test."""
    path = tmp_path / "runs.sqlite"
    monkeypatch.setenv("LABKIT_STORE", str(path))
    return RunStore(path)


def trace_lengths(fig) -> dict:
    return {t.name: len(t.x) for t in fig.data}


def same(value, expected) -> bool:
    """Equal, with float tolerance (a log slider stores 10**x)."""
    return value == pytest.approx(expected) if isinstance(expected, float) else value == expected


# --------------------------------------------------------------------------- Param -> control rules


@pytest.mark.parametrize(
    "param, kind",
    [
        (Param("flag", bool, False), "checkbox"),
        (Param("arm", str, "a", choices=("a", "b")), "select"),
        (Param("k", int, 2, choices=(1, 2, 4)), "select"),
        (Param("name", str, "x"), "text"),
        (Param("steps", int, 20, low=1, high=500), "int_slider"),
        (Param("n", int, 300, low=10, high=100_000), "int_box"),
        (Param("n", int, 3, low=1), "int_box"),
        (Param("lr", float, 0.01, low=1e-5, high=1.0, log=True), "log_slider"),
        (Param("lr", float, 0.01, low=1e-12, high=1e3, log=True), "float_box"),  # 15 decades: too wide
        (Param("frac", float, 0.5, low=0.0, high=1.0), "float_slider"),
        (Param("frac", float, 0.1, low=0.0, high=1.0), "float_slider"),
        (Param("wd", float, 0.05, low=0.0, high=10.0), "float_box"),  # 0.05 would sit in the first 5%
        (Param("eta", float, 1.0, low=0.0, high=100.0), "float_box"),
        (Param("x", float, 0.0, low=0.0), "float_box"),
        (Param("x", float, 1.0), "float_box"),
    ],
)
def test_control_spec_kinds(param, kind):
    assert control_spec(param).kind == kind


def test_control_spec_ranges():
    assert control_spec(Param("steps", int, 20, low=1, high=500)) == forms.ControlSpec("int_slider", 1, 500, 1)
    log = control_spec(Param("lr", float, 0.01, low=1e-4, high=1.0, log=True))
    assert (log.low, log.high) == (1e-4, 1.0) and log.step == pytest.approx(4 / forms.SLIDER_STEPS)
    lin = control_spec(Param("frac", float, 0.5, low=0.0, high=2.0))
    assert lin.step == pytest.approx(0.02)
    assert control_spec(Param("arm", str, "a", choices=("a", "b"))).options == ("a", "b")


# --------------------------------------------------------------------------- ipywidgets controls


def test_param_controls_types_ranges_and_main_only():
    controls = param_controls(TOY_PARAMS)
    assert list(controls) == ["lr", "steps", "arm", "noise"]  # "hidden" is not a main knob
    assert isinstance(controls["lr"], ipw.FloatLogSlider)
    assert (controls["lr"].min, controls["lr"].max) == (pytest.approx(-3), pytest.approx(0))
    assert isinstance(controls["steps"], ipw.IntSlider)
    assert (controls["steps"].min, controls["steps"].max) == (1, 500)
    assert isinstance(controls["arm"], ipw.Dropdown) and list(controls["arm"].options) == ["a", "b"]
    assert isinstance(controls["noise"], forms.TextNumberBox) and controls["noise"].value == 0.0
    assert "no upper bound" in controls["noise"].tooltip and "a number of at least 0" in controls["noise"].tooltip
    assert "hidden" in param_controls(TOY_PARAMS, main_only=False)
    assert isinstance(param_controls([Param("flag", bool, True)])["flag"], ipw.Checkbox)


@pytest.mark.parametrize("preset", ["quick", "standard", "full"])
def test_param_controls_take_the_preset_values(preset):
    controls = param_controls(TOY_PARAMS, preset)
    for p in TOY_PARAMS:
        if p.main:
            assert same(controls[p.name].value, p.value_for(preset)), p.name


def test_param_controls_reject_an_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        param_controls(TOY_PARAMS, "fast")


def test_preset_dropdown_resets_the_controls():
    controls = param_controls(TOY_PARAMS)
    picker = preset_dropdown(controls, TOY_PARAMS)
    controls["steps"].value = 7
    picker.value = "standard"
    assert controls["steps"].value == 40 and controls["lr"].value == pytest.approx(0.2)
    picker.value = "full"
    assert controls["arm"].value == "b"
    picker.value = "quick"
    assert (controls["steps"].value, controls["arm"].value) == (20, "a")


# --------------------------------------------------------------------------- live curves


def test_live_curves_keep_one_metric_and_split_seeds():
    curves = LiveCurves()
    rows = [
        (0, 1, "m", "loss", 1.0),
        (0, 1, "m", "acc", 0.1),
        (0, 2, "m", "loss", 0.5),
        (1, 1, "m", "loss", 0.9),
        (0, 1, "b", "loss", 2.0),
    ]
    for seed, step, series, metric, value in rows:
        curves.add(dict(seed=seed, step=step, series=series, metric=metric, value=value))
    assert curves.metric == "loss"  # the first logged
    assert curves.lines() == {"m": ([1, 2, None, 1], [1.0, 0.5, None, 0.9]), "b": ([1], [2.0])}


def test_live_curves_throttle():
    curves = LiveCurves(every=60)
    assert curves.due() and not curves.due()


# --------------------------------------------------------------------------- the explorer


@pytest.fixture(params=["output", "figurewidget"])
def plot_backend(request, monkeypatch):
    """Run explorer tests with both live-plot backends (FigureWidget needs anywidget)."""
    if request.param == "figurewidget":
        pytest.importorskip("anywidget")
    monkeypatch.setattr(forms, "figure_widget_available", lambda: request.param == "figurewidget")
    return request.param


def test_explorer_trains_and_plots_live(toy, plot_backend):
    ex = explorer(toy)
    seen = []
    toy.on_step = lambda: seen.append(sum(trace_lengths(ex.figure).values()))
    result = ex.train()
    assert isinstance(ex, ipw.VBox) and result is ex.result
    assert isinstance(ex.figure, ipw.DOMWidget) == (plot_backend == "figurewidget")
    assert seen and seen[0] > 0  # the plot had data while the run was still going
    assert trace_lengths(ex.figure) == {"method": 20, "baseline": 20}
    assert ex.figure.layout.title.text == "loss"
    assert "[HOLDS] (headline) method beats baseline" in ex.status.value and "color:" not in ex.status.value
    assert not ex.train_button.disabled


def test_explorer_plots_the_asked_metric_and_uses_the_form(toy):
    ex = explorer(toy, metric="acc")
    ex.controls["steps"].value = 5
    result = ex.train()
    assert result.params["steps"] == 5
    assert trace_lengths(ex.figure) == {"method": 5}


def test_explorer_names_a_metric_that_was_never_logged(toy):
    ex = explorer(toy, metric="reward")
    ex.train()
    assert "metric 'reward' was not logged" in ex.status.value and "'loss', 'acc'" in ex.status.value


def test_explorer_preset_switch_runs_that_preset(toy):
    ex = explorer(toy)
    ex.preset_picker.value = "standard"
    result = ex.train()
    assert (result.preset, result.params["steps"]) == ("standard", 40)
    assert trace_lengths(ex.figure)["method"] == 40


def test_explorer_shows_a_bad_value_in_red_and_records_nothing(toy, store):
    ex = explorer(toy, record=True)
    ex.controls["noise"].value = -1.0  # below the param's low bound
    assert ex.train() is None
    assert "Not trained" in ex.status.value and "noise=-1.0 is out of range" in ex.status.value
    assert forms.ERROR_COLOUR in ex.status.value
    assert not ex.train_button.disabled
    assert len(store.runs()) == 0
    ex.controls["noise"].value = 0.5  # now valid: the claim does not hold, and the run is recorded
    ex.train()
    assert "[DOES NOT HOLD]" in ex.status.value
    assert list(store.runs()["method"]) == ["toy"]


def test_ipywidgets_number_box_checks_each_keystroke_and_never_rewrites_the_text():
    box = forms.make_control(N_PAIRS)
    assert isinstance(box, forms.TextNumberBox) and (box.value, box.error, box.input.value) == (300, "", "300")
    assert box.refusal.layout.display == "none" and box.input.continuous_update
    for text in ("2.5", "abc", "", "5", "-1"):  # IntText would hold 2 for "2.5"; BoundedIntText clamps -1
        box.input.value = text
        assert box.value is None and box.input.value == text and box.text == text, text
        assert "a whole number from 10 to 100,000" in box.error and box.error in html_lib.unescape(box.refusal.value)
        assert box.refusal.layout.display != "none" and forms.ERROR_COLOUR in box.refusal.value
    box.input.value = "25"
    assert (box.value, box.error, box.refusal.layout.display) == (25, "", "none")
    box.value = 40  # from Python (a preset switch): the text follows
    assert (box.input.value, box.value) == ("40", 40)
    box.input.value = "<b>x</b>"
    assert box.value is None and "&lt;b&gt;" in box.refusal.value and "<b>x" not in box.refusal.value


def test_explorer_sliders_have_no_typeable_readout(toy):
    ex = explorer(toy)
    shown = {c: box for box in ex.children for c in getattr(box, "children", ()) if c in ex.controls.values()}
    for name in ("lr", "steps"):  # an ipywidgets readout clamps and rounds what is typed into it
        slider = ex.controls[name]
        assert isinstance(slider, forms.SLIDERS) and not slider.readout
        label = shown[slider].children[1]
        assert isinstance(label, ipw.Label) and label.value == {"lr": "0.1", "steps": "20"}[name]
    ex.controls["steps"].value = 7
    assert shown[ex.controls["steps"]].children[1].value == "7"


@pytest.mark.parametrize(
    "box, text, words",
    [
        ("noise", "2.5x", "noise='2.5x' is not a valid value: expected a number of at least 0"),
        ("noise", "abc", "noise='abc' is not a valid value: expected a number of at least 0"),
        ("noise", "", "noise is empty: expected a number of at least 0"),
        ("noise", "-1", "noise=-1.0 is out of range: expected a number of at least 0"),
        ("seed", "2.5", "seed='2.5' is not allowed: expected a whole number from 0"),
        ("seed", "abc", "seed='abc' is not allowed"),
        ("seed", "", "seed is empty: expected a whole number from 0"),
        ("seed", "-1", "seed=-1 is not allowed: expected a whole number from 0"),
    ],
)
def test_explorer_refuses_typed_values_and_runs_nothing(toy, store, monkeypatch, box, text, words):
    ex = explorer(toy, record=True)
    calls = []
    real_run = toy.run
    monkeypatch.setattr(toy, "run", lambda **kw: calls.append(kw) or real_run(**kw))
    target = ex.seed_box if box == "seed" else ex.controls[box]
    target.input.value = text
    assert target.value is None and words in html_lib.unescape(target.refusal.value)
    assert ex.train() is None
    shown = html_lib.unescape(ex.status.value)
    assert "Not trained" in shown and words in shown and forms.ERROR_COLOUR in ex.status.value
    assert calls == [] and len(store.runs()) == 0 and not ex.train_button.disabled


def test_explorer_names_every_refused_box_then_trains_with_the_typed_values(toy, store):
    ex = explorer(toy, record=True)
    ex.controls["noise"].input.value = "abc"
    ex.seed_box.input.value = "-1"
    assert ex.train() is None
    assert "noise='abc'" in ex.status.value and "seed=-1" in ex.status.value and len(store.runs()) == 0
    ex.controls["noise"].input.value = "0.25"
    ex.seed_box.input.value = "3"
    result = ex.train()
    assert (result.params["noise"], result.seed) == (0.25, 3) and "Not trained" not in ex.status.value
    assert len(store.runs()) == 1


@pytest.mark.parametrize("gpu", [False, True])
def test_explorer_warns_before_the_full_preset_without_a_gpu_and_still_trains(toy, monkeypatch, gpu):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    ex = explorer(toy, device="cpu" if gpu else "auto")  # a GPU the run is told not to use warns too
    assert ex.warning.layout.display == "none" and ex.warning.value == ""
    ex.preset_picker.value = "full"
    assert "sized for one GPU" in ex.warning.value and ex.warning.layout.display != "none"
    ex.preset_picker.value = "standard"
    assert ex.warning.layout.display == "none"
    ex.preset_picker.value = "full"
    result = ex.train()  # warned, not blocked
    assert result is not None and result.preset == "full" and "Not trained" not in ex.status.value
    assert "sized for one GPU" in ex.warning.value


def test_explorer_does_not_warn_with_a_gpu(toy, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ex = explorer(toy)
    ex.preset_picker.value = "full"
    assert ex.warning.value == "" and ex.warning.layout.display == "none"
    assert forms.preset_warning("full") == "" and forms.preset_warning("full", "cpu") == forms.FULL_ON_CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert forms.preset_warning("full") == forms.FULL_ON_CPU and forms.preset_warning("standard") == ""


def test_method_page_warns_before_the_full_preset_without_a_gpu(toy, store, monkeypatch):
    import torch

    from widgets.app import MethodPage

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    page = MethodPage(toy, store=store)
    assert not page.warning.visible
    page.preset.value = "full"
    assert page.warning.visible and "sized for one GPU" in rendered(page.warning)
    result = page.train_now()  # warned, not blocked
    assert result is not None and result.preset == "full" and page.warning.visible and len(store.runs()) == 1
    page.preset.value = "quick"
    assert not page.warning.visible
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    page.preset.value = "full"
    assert not page.warning.visible


def test_explorer_rejects_unknown_methods():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        explorer("nope")
    with pytest.raises(TypeError, match="expected a method slug"):
        explorer(3.5)


def test_import_widgets_is_cheap():
    code = (
        "import sys, widgets; heavy = [m for m in ('panel', 'torch', 'ipywidgets', 'plotly') if m in sys.modules];"
        "print(heavy); assert not heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- Panel forms and the app


def test_panel_controls_follow_the_same_rules():
    controls = panel_forms.panel_controls(TOY_PARAMS)
    assert list(controls) == ["lr", "steps", "arm", "noise"]
    assert isinstance(controls["lr"], panel.widgets.DiscreteSlider)
    assert isinstance(controls["steps"], panel.widgets.IntSlider)
    assert (controls["steps"].start, controls["steps"].end) == (1, 500)
    assert isinstance(controls["arm"], panel.widgets.Select) and controls["arm"].options == ["a", "b"]
    # a number box is a text box checked as typed (Panel's FloatInput/IntInput rewrite what is typed)
    assert isinstance(controls["noise"], panel_forms.NumberBox) and controls["noise"].value == 0.0
    assert isinstance(panel_forms.panel_control(Param("flag", bool, True)), panel.widgets.Checkbox)
    assert isinstance(panel_forms.panel_control(Param("f", float, 0.5, low=0, high=1)), panel.widgets.FloatSlider)


def test_panel_log_slider_holds_the_preset_values():
    param = Param("lr", float, 3e-4, standard=0.0123, low=1e-5, high=1.0, log=True)
    options = panel_forms.log_options(param, 1e-5, 1.0)
    values = list(options.values())
    assert values == sorted(values) and values[0] == 1e-5 and values[-1] == 1.0
    assert {3e-4, 0.0123} <= set(values)
    assert all(math.isclose(v, float(label), rel_tol=1e-9) for label, v in options.items())


def test_panel_preset_select_resets_the_controls():
    controls = panel_forms.panel_controls(TOY_PARAMS)
    select = panel_forms.panel_preset_select(controls, TOY_PARAMS)
    controls["steps"].value = 3
    select.value = "standard"
    assert (controls["steps"].value, controls["lr"].value) == (40, 0.2)


def test_gallery_lists_every_method_by_family():
    from widgets.app import gallery

    html = "".join(obj.object for obj in gallery().select(panel.pane.HTML))
    assert html.count('class="labkit-card') == len(labkit.METHODS) == 30
    for m in labkit.METHODS:
        assert f'data-slug="{m.slug}"' in html and m.arxiv_url in html
    n_open = html.count('class="open"')
    assert n_open == len(labkit.available_methods())
    assert html.count('class="soon"') == 30 - n_open


def test_create_app_falls_back_to_the_gallery_with_a_note():
    from widgets.app import create_app

    page = create_app("nope")
    alerts = page.select(panel.pane.Alert)
    assert alerts and "unknown method 'nope'" in alerts[0].object
    missing = next((m for m in labkit.METHODS if not m.available), None)  # none once all thirty are written
    if missing is not None:
        assert "not available yet" in create_app(missing.slug).select(panel.pane.Alert)[0].object


def test_method_page_trains_records_and_lists_runs(toy, store):
    from widgets.app import MethodPage

    page = MethodPage(toy, store=store)
    assert len(page.runs_table.object) == 0
    page.controls["steps"].value = 6
    result = page.train_now()
    assert result.params["steps"] == 6 and not page.error.visible
    assert trace_lengths(page.figure) == {"method": 6, "baseline": 6}
    assert "[HOLDS] (headline) method beats baseline" in page.claims.object
    assert list(page.runs_table.object["changed params"]) == ["steps=6"]
    page.controls["steps"].value = 20  # back to the preset's value: nothing changed
    page.train_now()
    assert list(page.runs_table.object["changed params"]) == ["—", "steps=6"]


def test_method_page_shows_a_bad_value_as_an_alert(toy, store):
    from widgets.app import MethodPage

    page = MethodPage(toy, store=store)
    page.controls["noise"].value = -2.0
    assert page.train_now() is None
    assert page.error.visible and "noise=-2.0 is out of range" in page.error.object
    assert page.claims.object == "" and not page.train_button.disabled
    assert len(store.runs()) == 0


def test_method_page_async_train_runs_in_a_worker_thread(toy, store):
    import threading

    from widgets.app import MethodPage

    page = MethodPage(toy, store=store, metric="acc")
    threads = []
    toy.on_step = lambda: threads.append(threading.current_thread())
    asyncio.run(page._on_train())
    assert threads and threads[0] is not threading.main_thread()
    assert trace_lengths(page.figure) == {"method": 20} and "[HOLDS]" in page.claims.object
    assert len(page.runs_table.object) == 1


# --------------------------------------------------------------------------- the real methods


@pytest.mark.parametrize("info", labkit.available_methods(), ids=lambda m: m.slug)
def test_forms_build_for_every_available_method(info, store):
    from widgets.app import MethodPage

    module = info.load()
    main = [p.name for p in module.PARAMS if p.main]
    ex = explorer(info.slug)
    assert list(ex.controls) == main
    for p in module.PARAMS:
        if p.main:
            assert same(ex.controls[p.name].value, p.quick), p.name
    page = MethodPage(info.slug, store=store)
    assert list(page.controls) == main
    assert labkit.get_method(info.slug).short in page.view.objects[0].object


# --------------------------------------------------------------------------- typed numbers and shown text

INJECTION = '<img src=x onerror="alert(1)">'


def rendered(markdown_pane) -> str:
    """The HTML a Markdown pane puts into the page (what the browser sets as innerHTML)."""
    import html as html_lib

    return html_lib.unescape(markdown_pane._transform_object(markdown_pane.object)["object"])


@pytest.mark.parametrize(
    "param, words",
    [
        (Param("n", int, 300, low=10, high=100_000), "a whole number from 10 to 100,000"),
        (Param("eta", float, 1.0, low=0.0, high=100.0), "a number from 0 to 100"),
        (Param("lr", float, 0.01, low=1e-5, high=1.0), "a number from 1e-05 to 1"),
        (Param("noise", float, 0.0, low=0.0), "a number of at least 0"),
        (Param("k", int, 3, high=9), "a whole number of at most 9"),
        (Param("x", float, 1.0), "a number"),
        (Param("arm", str, "a", choices=("a", "b")), "one of a, b"),
    ],
)
def test_allowed_words(param, words):
    assert forms.allowed_words(param) == words


N_PAIRS = Param("n_pairs", int, 300, low=10, high=100_000)
ETA = Param("eta", float, 1.0, low=0.0, high=100.0)


@pytest.mark.parametrize(
    "param, text, refusal",
    [
        (N_PAIRS, "2.5", "n_pairs='2.5' is not a valid value: expected a whole number from 10 to 100,000"),
        (N_PAIRS, "abc", "n_pairs='abc' is not a valid value: expected a whole number from 10 to 100,000"),
        (N_PAIRS, "", "n_pairs is empty: expected a whole number from 10 to 100,000"),
        (N_PAIRS, "  ", "n_pairs is empty"),
        (N_PAIRS, "5", "n_pairs=5 is out of range: expected a whole number from 10 to 100,000"),  # not clamped
        (N_PAIRS, "1_000", "n_pairs='1_000' is not a valid value"),
        (ETA, "abc", "eta='abc' is not a valid value: expected a number from 0 to 100"),
        (ETA, "", "eta is empty: expected a number from 0 to 100"),
        (ETA, "nan", "eta='nan' is not a valid value"),
        (ETA, "-1", "eta=-1.0 is out of range: expected a number from 0 to 100"),
    ],
)
def test_parse_typed_refuses_in_words(param, text, refusal):
    with pytest.raises(ValueError) as err:
        forms.parse_typed(param, text)
    assert refusal in str(err.value)


def test_parse_typed_takes_what_is_typed():
    assert forms.parse_typed(N_PAIRS, "250") == 250 and isinstance(forms.parse_typed(N_PAIRS, " 250 "), int)
    assert forms.parse_typed(N_PAIRS, "100000") == 100_000  # bounds are inclusive
    assert forms.parse_typed(ETA, "2.5") == 2.5 and forms.parse_typed(ETA, "0") == 0.0


@pytest.mark.parametrize(
    "text, refusal",
    [
        ("-1", "seed=-1 is not allowed: expected a whole number from 0 to 2,147,483,647"),
        ("2.5", "seed='2.5' is not allowed: expected a whole number from 0"),
        ("abc", "seed='abc' is not allowed"),
        ("", "seed is empty: expected a whole number from 0"),
    ],
)
def test_parse_seed_refuses_in_words(text, refusal):
    with pytest.raises(ValueError) as err:
        forms.parse_seed(text)
    assert refusal in str(err.value)
    assert forms.parse_seed("7") == 7


def test_number_box_checks_each_keystroke_and_never_rewrites_the_text():
    box = panel_forms.panel_control(N_PAIRS)
    assert (box.value, box.error, box.input.value) == (300, "", "300") and not box.refusal.visible
    for text in ("2.5", "abc", "", "5"):
        box.input.value_input = text  # what the browser sends on every keystroke
        assert box.value is None and box.error and box.refusal.visible, text
        assert box.text == text and "a whole number from 10 to 100,000" in box.refusal.object
    box.input.value_input = "25"
    assert (box.value, box.error, box.refusal.visible) == (25, "", False)
    box.value = 40  # from Python (a preset switch): the text follows
    assert (box.input.value, box.input.value_input, box.value) == ("40", "40", 40)
    box.input.value = "<b>x</b>"  # Enter or leaving the box; the refusal is shown as text
    assert box.value is None and "&lt;b&gt;" in box.refusal.object and "<b>" not in box.refusal.object


def test_method_page_refuses_typed_values_and_trains_on_none_of_them(toy, store):
    from widgets.app import MethodPage

    page = MethodPage(toy, store=store)
    noise = page.controls["noise"]
    for text, words in [("abc", "is not a valid value"), ("", "is empty"), ("-1", "is out of range")]:
        noise.input.value_input = text
        assert page.train_now() is None, text
        assert page.error.visible and f"noise{'' if text == '' else '='}" in page.error.object
        assert words in page.error.object and "a number of at least 0" in page.error.object
        assert "Not trained" in page.status.object and not page.train_button.disabled
    noise.input.value_input = "0.25"
    for text in ("-1", "2.5", ""):
        page.seed.input.value_input = text
        assert page.train_now() is None and "seed" in page.error.object and "whole number" in page.error.object
    assert len(store.runs()) == 0
    page.seed.input.value_input = "3"
    result = page.train_now()
    assert (result.params["noise"], result.seed) == (0.25, 3) and not page.error.visible
    assert len(store.runs()) == 1


def test_app_shows_an_injected_method_as_text():
    from widgets.app import create_app

    alert = create_app(INJECTION).select(panel.pane.Alert)[0]
    shown = rendered(alert)
    assert "<img" not in shown and "&lt;img src=x onerror=" in shown and "unknown method" in shown


def test_markdown_text_makes_no_markup():
    text = "*em* _u_ [link](javascript:alert(1)) `code` $x$ <script>alert(1)</script> a\\b noise=-2.0"
    shown = rendered(panel.pane.Markdown(forms.markdown_text(text)))
    for tag in ("<em", "<a ", "<code", "<script", '<span class="math'):
        assert tag not in shown, tag
    assert "*em* _u_ [link](javascript:alert(1)) `code` $x$ &lt;script&gt;" in shown and "a\\b noise=-2.0" in shown
    for line, tag in [("# title", "<h1"), ("- item", "<li"), ("1. item", "<ol"), ("text\n===", "<h1")]:
        assert tag not in rendered(panel.pane.Markdown(forms.markdown_text(line))), line
    assert forms.html_text('"<x>&') == "&quot;&lt;x&gt;&amp;"


def test_method_page_shows_errors_and_recorded_text_escaped(toy, store):
    import pandas as pd

    from widgets.app import MethodPage

    page = MethodPage(toy, store=store)
    page._finish(error=ValueError(f"arm={INJECTION!r} is not allowed"))
    shown = rendered(page.error)
    assert "<img" not in shown and "&lt;img src=x" in shown

    class Store:  # a store whose records hold markup (a free-text param, a tampered file)
        def runs(self, slug):
            return pd.DataFrame(
                {
                    "id": [1],
                    "created_at": [0.0],
                    "preset": ["quick"],
                    "seed": [0],
                    "params": [{"steps": INJECTION}],
                    "metrics": [{"<b>loss</b>": 1.0}],
                    "verdict": [None],
                    "duration_s": [1.0],
                }
            )

    page.store = Store()
    page.refresh_runs()
    table = page.runs_table._transform_object(page.runs_table.object)["object"]
    import html as html_lib

    table = html_lib.unescape(table)
    assert "<img" not in table and "<b>" not in table and "&lt;img" in table

"""The interactive front ends without a browser: Param → control rules, ipywidgets forms and the
explorer, the Panel form builder, the app's gallery and method page.

A tiny fake method (``toy``) stands in for the real ones, so these tests do not depend on which
methods exist; the last tests build forms for every method that is available.
"""

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
from widgets.app_plot import LiveRows
from widgets.forms import control_spec, explorer, param_controls, preset_dropdown

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


def mean_lengths(page) -> dict:
    """``{series: points}`` of the mean curves on an app page's plot."""
    return {t.name: len(t.x) for t in page.plot.object.data if t.meta == "mean"}


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


def test_live_rows_keep_one_metric_and_every_seed():
    live = LiveRows()
    rows = [
        (0, 1, "m", "loss", 1.0),
        (0, 1, "m", "acc", 0.1),
        (0, 2, "m", "loss", 0.5),
        (1, 1, "m", "loss", 0.9),
        (0, 1, "b", "loss", 2.0),
    ]
    for seed, step, series, metric, value in rows:
        live.add(dict(seed=seed, step=step, series=series, metric=metric, value=value))
    assert live.metric == "loss"  # the first logged
    assert live.frame().values.tolist() == [[0, 1, "m", 1.0], [0, 2, "m", 0.5], [1, 1, "m", 0.9], [0, 1, "b", 2.0]]


def test_live_rows_throttle():
    live = LiveRows(every=60)
    assert live.due() and not live.due()


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


def test_explorer_draws_as_the_app_does_with_the_axis_named_by_what_it_counts(toy, plot_backend, monkeypatch):
    from widgets.app_plot import curve_figure, metric_rows

    monkeypatch.setattr(toy, "STEP_LABEL", "round", raising=False)
    ex = explorer(toy)
    assert ex.figure.layout.xaxis.title.text == "round"  # before any run too
    result = ex.train()
    app = curve_figure(metric_rows(result.history, "loss"), "loss", "round")
    assert [(t.name, t.meta, list(t.y)) for t in ex.figure.data] == [(t.name, t.meta, list(t.y)) for t in app.data]
    assert ex.figure.layout.xaxis.title.text == "round"


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
    # a bounded slider comes with a number box, so an exact value can be typed
    assert isinstance(controls["steps"], panel_forms.SliderBox)
    assert isinstance(controls["steps"].slider, panel.widgets.IntSlider)
    assert (controls["steps"].slider.start, controls["steps"].slider.end) == (1, 500)
    assert isinstance(controls["arm"], panel.widgets.Select) and controls["arm"].options == ["a", "b"]
    # a number box is a text box checked as typed (Panel's FloatInput/IntInput rewrite what is typed)
    assert isinstance(controls["noise"], panel_forms.NumberBox) and controls["noise"].value == 0.0
    assert isinstance(panel_forms.panel_control(Param("flag", bool, True)), panel.widgets.Checkbox)
    frac = panel_forms.panel_control(Param("f", float, 0.5, low=0, high=1))
    assert isinstance(frac, panel_forms.SliderBox) and isinstance(frac.slider, panel.widgets.FloatSlider)


def test_slider_box_takes_an_exact_typed_value_and_follows_the_slider():
    box = panel_forms.panel_control(Param("rounds", int, 100, low=1, high=1000))
    assert (box.value, box.slider.value, box.box.input.value) == (100, 100, "100")
    box.box.input.value_input = "25"  # hard to hit by dragging a 1-1000 slider; typed, it is exact
    assert (box.value, box.slider.value, box.error) == (25, 25, "")
    box.box.input.value_input = "2.5"  # refused in words; the slider stays where it was
    assert box.value is None and "a whole number from 1 to 1,000" in box.error and box.slider.value == 25
    assert box.text == "2.5"  # the text stays as typed
    box.slider.value = 700  # dragged: the box follows
    assert (box.value, box.box.input.value, box.error) == (700, "700", "")
    box.value = 40  # a preset switch: both follow
    assert (box.box.input.value, box.slider.value) == ("40", 40)
    frac = panel_forms.panel_control(Param("f", float, 0.5, low=0, high=1))
    frac.slider.value = 0.35000000000000003  # a slider's float: shown as the number it means
    assert frac.box.input.value == "0.35" and frac.value == 0.35


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
    assert mean_lengths(page) == {"method": 6, "baseline": 6}
    assert 'class="labkit-claim headline" data-verdict="holds"' in page.claims.object
    assert "method beats baseline" in page.claims.object and ">HOLDS</span>" in page.claims.object
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
    page._on_train()  # outside a server: no periodic callback; join() finishes the page
    assert page.train_button.disabled and not page.stop_button.disabled
    result = page.join()
    assert threads and threads[0] is not threading.main_thread()
    assert mean_lengths(page) == {"method": 20} and 'data-verdict="holds"' in page.claims.object
    assert len(page.runs_table.object) == 1 and result.params["steps"] == 20
    assert not page.train_button.disabled and page.stop_button.disabled


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
    page._show_error(ValueError(f"arm={INJECTION!r} is not allowed"))
    shown = rendered(page.error)
    assert "<img" not in shown and "&lt;img src=x" in shown

    class Runs:  # a store whose records hold markup (a free-text param, a tampered file)
        def runs(self, slug, user=None):
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

    page.runs = Runs()
    page.refresh_runs()
    table = page.runs_table._transform_object(page.runs_table.object)["object"]
    import html as html_lib

    table = html_lib.unescape(table)
    assert "<img" not in table and "<b>" not in table and "&lt;img" in table


# --------------------------------------------------------------------------- the app's curves, Stop, users, pages


def test_app_curve_draws_mean_band_seeds_on_demand_and_the_previous_run():
    import pandas as pd

    from widgets.app_plot import curve_figure

    rows = pd.DataFrame(
        [(seed, step, arm, float(step + seed)) for seed in (0, 1) for arm in ("a", "b") for step in (1, 2, 3)],
        columns=["seed", "step", "series", "value"],
    )
    fig = curve_figure(rows, "loss", "round")
    metas = [t.meta for t in fig.data]
    assert metas.count("mean") == 2 and metas.count("band") == 2 and "seed" not in metas
    mean_a = next(t for t in fig.data if t.meta == "mean")
    assert list(mean_a.y) == [1.5, 2.5, 3.5]  # mean over the two seeds
    band = next(t for t in fig.data if t.meta == "band")
    assert list(band.y)[:3] == pytest.approx([1.5 + 0.5**0.5, 2.5 + 0.5**0.5, 3.5 + 0.5**0.5])  # ±1 sd
    # the same curve twice: both drawn, distinct dashes, the legend says which is which
    means = [t for t in fig.data if t.meta == "mean"]
    assert means[0].line.dash != means[1].line.dash and means[1].name == "b (same curve as a)"
    assert fig.layout.xaxis.title.text == "round"
    with_seeds = curve_figure(rows, "loss", show_seeds=True, previous=rows[rows["series"] == "a"])
    metas = [t.meta for t in with_seeds.data]
    assert metas.count("seed") == 4 and metas.count("previous") == 1
    assert next(t for t in with_seeds.data if t.meta == "previous").name == "previous run: a"


@pytest.mark.parametrize(
    "values, last_step, label",
    [
        ({"rounds": 25, "local_epochs": 1}, None, "round"),
        ({"n_steps": 2000, "log_every": 100}, None, "step"),
        ({"n_iters": 40, "n_steps": 2}, 40, "iteration"),
        ({"n_iters": 40, "n_steps": 200}, 199, "step"),
        ({"epochs": 3, "sft_steps": 10}, 3, "epoch"),
        ({"lr": 0.1}, None, "step"),
    ],
)
def test_app_x_axis_is_named_by_what_a_step_counts(values, last_step, label):
    import pandas as pd

    from widgets.app_plot import x_axis_label

    module = types.SimpleNamespace(PARAMS=[])
    history = None
    if last_step is not None:
        history = pd.DataFrame(
            {"seed": 0, "step": [0, last_step], "series": "a", "metric": "m", "value": 1.0},
        )
    assert x_axis_label(module, values, history, "m") == label
    module.STEP_LABEL = "game"  # a method may say it itself
    assert x_axis_label(module, values, history, "m") == "game"


def test_method_page_stop_ends_the_run_and_records_nothing(toy, store):
    from widgets.app import MethodPage

    page = MethodPage(toy, store=store)
    toy.on_step = page.stop  # pressed while the run goes (at step 10)
    page.controls["steps"].value = 40
    page._on_train()
    assert page.join() is None
    assert "Stopped" in page.status.object and "nothing was recorded" in page.status.object
    assert not page.error.visible and len(store.runs()) == 0
    assert max(mean_lengths(page).values()) <= 11  # what was drawn before the stop
    toy.on_step = None
    assert page.train_now() is not None and len(store.runs()) == 1  # Train works again


def test_method_page_overlays_its_previous_run(toy, store):
    from widgets.app import MethodPage

    page = MethodPage(toy, store=store)
    page.train_now()
    assert [t.meta for t in page.plot.object.data].count("previous") == 0
    page.controls["steps"].value = 5
    page.train_now()
    previous = [t for t in page.plot.object.data if t.meta == "previous"]
    assert {t.name for t in previous} == {"previous run: method", "previous run: baseline"}
    assert {len(t.x) for t in previous} == {20} and mean_lengths(page) == {"method": 5, "baseline": 5}


def test_recent_runs_are_per_user_unless_all_are_asked_for(toy, store):
    from widgets.app import MethodPage

    alice, bob = MethodPage(toy, store=store, user="a" * 32), MethodPage(toy, store=store, user="b" * 32)
    alice.train_now()
    bob.refresh_runs()
    assert len(alice.runs_table.object) == 1 and len(bob.runs_table.object) == 0
    bob.all_users.value = True
    assert len(bob.runs_table.object) == 1
    toy.run(record=True)  # a run outside the app (CLI, notebook): no user, listed among all users' runs
    alice.refresh_runs()
    bob.refresh_runs()
    assert (len(alice.runs_table.object), len(bob.runs_table.object)) == (1, 2)


def test_estimated_time_per_preset(toy, store):
    from widgets.app import MethodPage
    from widgets.app_store import benchmark_seconds, estimated_time

    page = MethodPage(toy, store=store)
    assert page.show_estimate().startswith("unknown")
    page.train_now()
    assert "median of 1 recorded run" in page.show_estimate()
    page.preset.value = "standard"
    assert page.show_estimate().startswith("unknown")
    rpo = labkit.get_method("rpo")
    if rpo.id in benchmark_seconds():
        assert "BENCHMARKS" in estimated_time(store, "rpo", rpo.id, "quick")


def test_gallery_search_and_family_filter():
    from widgets.app import Gallery

    gallery = Gallery()
    assert len(gallery.filter()) == 30
    gallery.search.value_input = "rpo"
    assert "rpo" in gallery.filter() and len(gallery.filter()) < 30
    gallery.search.value_input = ""
    family = labkit.METHODS[0].family
    gallery.family.value = family
    assert gallery.filter() == [m.slug for m in labkit.METHODS if m.family == family]
    gallery.search.value_input = "no such method at all"
    assert gallery.filter() == [] and "0 of 30 shown" in gallery.count.object


def test_gallery_cards_show_the_newest_verdict(store):
    from widgets.app import gallery

    rpo = labkit.get_method("rpo")
    record = {
        "method": "rpo", "preset": "quick", "seed": 0, "device": "cpu", "params": {}, "metrics": {}, "claims": [],
        "claims_hold": False, "verdict": "inconclusive", "duration_s": 1.0, "created_at": 0.0, "notebook": None,
        "history": [],
    }  # fmt: skip
    store.insert(record)
    store.insert({**record, "verdict": "holds"})  # the newest
    html = "".join(obj.object for obj in gallery(store=store).select(panel.pane.HTML))
    card = html[html.index(f'data-slug="{rpo.slug}"') :].split("</div></div>")[0]
    assert ">HOLDS</span>" in card and "INCONCLUSIVE" not in card
    other = next(m for m in labkit.available_methods() if m.slug != "rpo")
    card = html[html.index(f'data-slug="{other.slug}"') :].split("</div></div>")[0]
    assert "no run yet" in card


def test_claim_cards_show_verdict_sentence_and_numbers_escaped():
    from widgets.app import claim_cards

    claims = [
        ClaimCheck("method beats <b>baseline</b>", "gap", [0.2, 0.3, 0.25], margin=0.0, headline=True).to_dict(),
        ClaimCheck("a weak one", "gap", [0.1, -0.1, 0.05], margin=0.0, numbers={"acc": 0.5}).to_dict(),
    ]
    html = claim_cards(claims)
    assert html.index('data-verdict="holds"') < html.index('data-verdict="inconclusive"')
    assert "&lt;b&gt;baseline&lt;/b&gt;" in html and "<b>" not in html
    assert "acc = 0.500" in html and "claim: mean ≥ +0.000" in html
    assert "no claim" in claim_cards([])


def test_method_page_teaches_from_its_guide(toy, store, monkeypatch):
    from widgets import app
    from widgets.app import MethodPage

    guide = types.SimpleNamespace(
        what_you_see="Two arms decay.",
        equation=r"v_{t+1} = (1 - \eta) v_t",
        equation_note="η is the step size.",
        experiments=(types.SimpleNamespace(title="Longer", overrides={"steps": 7, "hidden": 4}, expect="Lower loss."),),
    )
    monkeypatch.setattr(app, "guide_of", lambda slug: guide)
    page = MethodPage(toy, store=store)
    panes = page.view.select(panel.pane.LaTeX)
    assert panes and guide.equation in panes[0].object
    page.apply_experiment(guide.experiments[0])
    assert page.controls["steps"].value == 7 and page.extra_overrides == {"hidden": 4}
    assert page.expect.visible and "Lower loss" in page.expect.object and "hidden=4" in page.expect.object
    result = page.train_now()
    assert (result.params["steps"], result.params["hidden"]) == (7, 4)
    monkeypatch.setattr(app, "guide_of", lambda slug: None)  # no guide: no teaching parts, the page still builds
    assert not MethodPage(toy, store=store).view.select(panel.pane.LaTeX)


def test_navigation_lab_link_and_neighbours():
    from widgets.app import contents, lab_link, neighbours

    available = labkit.available_methods()
    first, second = available[0], available[1]
    assert neighbours(first.slug) == (None, second)
    assert neighbours(second.slug)[0] == first and neighbours("nope") == (None, None)
    assert lab_link(first).endswith(f"/lab/tree/notebooks/{first.id:02d}_{first.slug}.ipynb")
    assert all(f"?method={m.slug})" in contents().object for m in available)


def test_compare_page_overlays_runs_with_a_table_and_csv(toy, store):
    from widgets.app import MethodPage
    from widgets.compare import ComparePage

    page = MethodPage(toy, store=store, user="u" * 32)
    page.train_now()
    page.controls["steps"].value = 6
    page.train_now()
    compare = ComparePage(toy, store=store, user="u" * 32)
    assert len(compare.picker.value) == 2
    names = sorted(t.name for t in compare.plot.object.data)
    assert len(names) == 4 and {n.split(" ")[0] for n in names} == {f"#{i}" for i in compare.picker.value}
    table = compare.table.object
    assert list(table["steps"]) == [6, 20] and "loss" in table.columns  # the param that differs, the metrics
    assert compare.csv().read().splitlines()[0].startswith("id,preset,seed,headline claim,steps")
    assert len(ComparePage(toy, store=store, user="v" * 32).picker.value) == 0  # another user's runs: not listed

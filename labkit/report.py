"""``labkit report``: a Jupyter Book (the Sphinx-based 1.x line) built from the run store and the executed notebooks.

The book has

- a front page, the scoreboard: every registered method with its headline claim and, per preset recorded, the
  verdict pooled over the runs at default parameters (below), the interval, how many runs and seeds it rests on,
  the time, and a link to the method's chapter;
- one chapter per available method, grouped by family (the parts of ``_toc.yml``): its newest executed notebook
  from the store, or the committed one when the store has none;
- a page for the machine, the versions and the times.

The book theme gives the contents sidebar, search, previous/next and per-page contents. The build is offline:
notebooks are not executed again (``execute_notebooks: off``), plotly.js is written into ``_static`` from the
plotly package and every figure is re-rendered to use it, and ipywidgets' loader (a CDN script) is off. Equations
are marked up for MathJax, which Sphinx loads from its CDN; without a network, the KaTeX copy that Panel ships is
written into ``_static`` and renders them instead (with the browser's fonts: Panel ships no KaTeX fonts).

Pooling. A run stores its claims with the per-seed values, the margin and the direction
(:meth:`ClaimCheck.to_dict`). A run started with ``seed = s`` whose claim has ``n`` values measured them on seeds
``s, s + 1, …, s + n - 1`` (:meth:`RunContext.seeds`). For each seed, the scoreboard takes the value of the newest
run at the preset's default parameters that covers it (two runs with overlapping seeds never count a seed twice),
and recomputes the three-way verdict with :class:`ClaimCheck` from those values and the margin the runs stored:
the margin is never chosen here. Runs whose headline differs from the newest one's (another statement, margin or
direction: the code changed in between) are left out and counted. The rows are built from store records (plain
dicts), so the tests pool hand-made records.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from .core.claims import ClaimCheck, Verdict
from .core.params import PRESETS, resolve_params
from .core.registry import FAMILIES, METHODS, REPO_ROOT, MethodInfo

if TYPE_CHECKING:
    from .core.store import RunStore


#: the CSS class of each verdict's badge
BADGE = {Verdict.HOLDS: "lk-holds", Verdict.DOES_NOT_HOLD: "lk-fails", Verdict.INCONCLUSIVE: "lk-unsure"}


@dataclass(frozen=True)
class Pooled:
    """A method's headline claim at one preset, over ``seeds`` taken from the runs ``run_ids``."""

    preset: str
    check: ClaimCheck
    seeds: tuple[int, ...]
    run_ids: tuple[int, ...]
    seconds: float
    newest: float
    at_defaults: bool = True
    left_out: int = 0
    devices: tuple[str, ...] = ()

    @property
    def verdict(self) -> Verdict:
        return self.check.verdict

    def basis(self) -> str:
        """How many runs and seeds the verdict rests on, in words."""
        runs = len(self.run_ids)
        text = f"{len(self.seeds)} seed{'s' * (len(self.seeds) != 1)} from {runs} run{'s' * (runs != 1)}"
        if not self.at_defaults:
            text += " (the newest run; none at the preset's default parameters)"
        if self.left_out:
            text += f"; {self.left_out} older run{'s' * (self.left_out != 1)} with another claim or margin left out"
        return text


@dataclass
class Row:
    """One method on the scoreboard: its headline per preset (absent presets have no entry)."""

    method: MethodInfo
    chapter: str | None
    by_preset: dict[str, Pooled] = field(default_factory=dict)

    @property
    def claim(self) -> ClaimCheck | None:
        """The headline as the most complete preset states it (the statement is the same at every preset)."""
        for preset in reversed(PRESETS):
            if preset in self.by_preset:
                return self.by_preset[preset].check
        return None


def _canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _headline(record: dict) -> dict | None:
    head = next((c for c in record.get("claims", []) if c.get("headline")), None)
    return head if head is not None and head.get("values") else None


def _same_claim(a: dict, b: dict) -> bool:
    return (
        a["claim"] == b["claim"]
        and math.isclose(float(a["margin"]), float(b["margin"]), rel_tol=0, abs_tol=1e-12)
        and bool(a.get("higher_is_better", True)) == bool(b.get("higher_is_better", True))
    )


def pool_headline(records: Sequence[dict], defaults: dict | None) -> Pooled | None:
    """Pool the headline claim of ``records`` (one preset's runs of one method, newest first) over distinct seeds.

    ``defaults`` are the preset's default parameters; only runs with exactly these are pooled. When none has
    them (or ``defaults`` is None), the newest run with a headline is shown alone and the result says so.
    Returns None when no record has a headline claim with per-seed values (old records, methods without one)."""
    with_head = [r for r in records if _headline(r) is not None]
    if not with_head:
        return None
    chosen = [r for r in with_head if defaults is not None and _canonical(r["params"]) == _canonical(defaults)]
    at_defaults = bool(chosen)
    if not chosen:
        chosen = with_head[:1]
    reference = _headline(chosen[0])
    by_seed: dict[int, float] = {}
    used: list[dict] = []
    left_out = 0
    for record in chosen:  # newest first: the newest value of a seed wins
        head = _headline(record)
        if not _same_claim(head, reference):
            left_out += 1
            continue
        seeds = [int(record["seed"]) + k for k in range(len(head["values"]))]
        fresh = [(s, v) for s, v in zip(seeds, head["values"]) if s not in by_seed]
        if fresh:
            used.append(record)
            by_seed.update(fresh)
    order = sorted(by_seed)
    check = ClaimCheck(
        claim=reference["claim"],
        quantity=reference["quantity"],
        values=[by_seed[s] for s in order],
        margin=float(reference["margin"]),
        higher_is_better=bool(reference.get("higher_is_better", True)),
        headline=True,
        decimals=int(reference.get("decimals", 3)),
        level=float(reference.get("level", 0.95)),
    )
    return Pooled(
        preset=str(chosen[0]["preset"]),
        check=check,
        seeds=tuple(order),
        run_ids=tuple(int(r["id"]) for r in used),
        seconds=float(sum(float(r.get("duration_s", 0.0)) for r in used)),
        newest=float(chosen[0].get("created_at", 0.0)),
        at_defaults=at_defaults,
        left_out=left_out,
        devices=tuple(sorted({str(r.get("device", "")) for r in used})),
    )


def build_rows(
    methods: Iterable[MethodInfo],
    records: Sequence[dict],
    chapters: dict[str, str],
    defaults_of: Callable[[MethodInfo, str], dict | None],
) -> list[Row]:
    """One :class:`Row` per method. ``records`` are store rows (dicts, newest first, any method and preset);
    ``chapters`` maps a slug to its chapter's page (relative to the front page); ``defaults_of(info, preset)``
    returns the preset's default parameters (or None if the method cannot be loaded)."""
    by_method: dict[str, list[dict]] = {}
    for record in records:
        by_method.setdefault(record["method"], []).append(record)
    rows = []
    for info in methods:
        row = Row(info, chapters.get(info.slug))
        mine = by_method.get(info.slug, [])
        for preset in PRESETS:
            at_preset = [r for r in mine if r["preset"] == preset]
            if at_preset:
                pooled = pool_headline(at_preset, defaults_of(info, preset))
                if pooled is not None:
                    row.by_preset[preset] = pooled
        rows.append(row)
    return rows


def presets_shown(rows: Sequence[Row]) -> list[str]:
    """The presets with at least one recorded headline, in preset order; ``quick`` always."""
    present = {p for row in rows for p in row.by_preset}
    return [p for p in PRESETS if p == "quick" or p in present]


def tally(rows: Sequence[Row], preset: str) -> dict[Verdict, int]:
    counts = dict.fromkeys(Verdict, 0)
    for row in rows:
        if preset in row.by_preset:
            counts[row.by_preset[preset].verdict] += 1
    return counts


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _cell(pooled: Pooled | None) -> str:
    if pooled is None:
        return "<td class='lk-none'>not recorded</td>"
    esc = html.escape
    v = pooled.verdict
    interval = pooled.check.interval.text(pooled.check.decimals)
    return (
        f"<td><span class='lk-badge {BADGE[v]}'>{esc(v.value)}</span>"
        f"<div class='lk-interval'>{esc(interval)}; claim: {esc(pooled.check.bar())}</div>"
        f"<div class='lk-basis'>{esc(pooled.basis())}</div>"
        f"<div class='lk-time'>{pooled.seconds:.1f} s of run() · {esc(_when(pooled.newest))}</div></td>"
    )


def scoreboard_html(rows: Sequence[Row]) -> str:
    """The front page's table: one row per method (every registered one), one verdict column per preset shown.
    Every string that comes from the store or the registry is escaped."""
    esc = html.escape
    presets = presets_shown(rows)
    head = "".join(f"<th>{esc(p)} preset</th>" for p in presets)
    body = []
    for row in rows:
        m = row.method
        name = esc(m.short)
        title = f"<a href='{esc(row.chapter)}'>{name}</a>" if row.chapter else name
        paper = f"<a class='lk-paper' href='{esc(m.arxiv_url)}'>arXiv {esc(m.arxiv)}</a>"
        if not m.available:
            body.append(
                f"<tr class='lk-method' data-slug='{esc(m.slug)}'><td>{m.id:02d}</td><td>{title}<br>{paper}</td>"
                f"<td>{esc(m.family)}</td><td colspan='{len(presets) + 1}'>not available yet</td></tr>"
            )
            continue
        claim = row.claim
        claim_cell = (
            f"{esc(claim.claim)}<div class='lk-quantity'>{esc(claim.quantity)}</div>"
            if claim is not None
            else f"no recorded run yet (<code>labkit run {esc(m.slug)}</code>)"
        )
        cells = "".join(_cell(row.by_preset.get(p)) for p in presets)
        body.append(
            f"<tr class='lk-method' data-slug='{esc(m.slug)}'><td>{m.id:02d}</td><td>{title}<br>{paper}</td>"
            f"<td>{esc(m.family)}</td><td class='lk-claim'>{claim_cell}</td>{cells}</tr>"
        )
    return (
        "<table class='lk-scoreboard'><thead><tr><th>#</th><th>method</th><th>family</th><th>headline claim</th>"
        f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


#: versions shown on the machine page (distribution names)
LIBRARIES = (
    "torch",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "plotly",
    "transformers",
    "peft",
    "dask",
    "papermill",
    "jupyter-book",
    "sphinx",
    "myst-nb",
)
FAMILY_TITLES = {
    "alignment": "Alignment",
    "adaptation": "Adaptation",
    "rl": "Reinforcement learning",
    "federated-robustness": "Federated learning and robustness",
    "retrieval-recsys-applied": "Retrieval, recommender systems and applied",
}
PLOTLY_CDN_MARK = "cdn.plot.ly"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_NOTE = (
    "*The interactive explorer runs in a live kernel: open this notebook in JupyterLab, or run `labkit dashboard`.*"
)


@dataclass(frozen=True)
class Chapter:
    """A method's chapter: the notebook it is built from and where that notebook came from."""

    method: MethodInfo
    notebook: Path
    origin: str  # "store" (an executed notebook a run recorded) or "committed" (notebooks/NN_slug.ipynb)
    preset: str | None
    seed: int | None
    recorded_at: float | None
    run_seconds: float | None

    @property
    def source_name(self) -> str:
        """The chapter's path in the book's source, without suffix (``chapters/<family>/NN_slug``)."""
        return f"chapters/{self.method.family}/{self.method.id:02d}_{self.method.slug}"

    @property
    def page(self) -> str:
        return self.source_name + ".html"

    @property
    def wall_seconds(self) -> float | None:
        """papermill's wall time for the whole notebook, from its metadata."""
        try:
            meta = json.loads(self.notebook.read_text(encoding="utf-8"))["metadata"]
            return float(meta["papermill"]["duration"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def store_records(store: RunStore) -> list[dict]:
    """The store's runs as plain dicts, newest first."""
    records = store.runs().to_dict("records")
    for r in records:  # pandas reads a missing notebook path as NaN
        if not isinstance(r.get("notebook"), str) or not r["notebook"]:
            r["notebook"] = None
    return records


def default_params(info: MethodInfo, preset: str) -> dict | None:
    """The preset's default parameters of a method (what ``run(preset)`` uses with no override)."""
    try:
        return resolve_params(info.load().PARAMS, preset, {})
    except Exception:  # noqa: BLE001 - a method that cannot load has no defaults; its rows show the newest run
        return None


def choose_chapters(records: list[dict], methods: Iterable[MethodInfo] | None = None) -> dict[str, Chapter]:
    """Each available method's newest executed notebook that still exists, else its committed notebook."""
    chapters = {}
    for info in METHODS if methods is None else methods:
        if not info.available:
            continue
        mine = [r for r in records if r["method"] == info.slug and r.get("notebook")]
        newest = next((r for r in mine if Path(r["notebook"]).exists()), None)
        if newest is not None:
            same = [r for r in mine if r["notebook"] == newest["notebook"]]
            chapters[info.slug] = Chapter(
                info,
                Path(newest["notebook"]),
                "store",
                str(newest["preset"]),
                int(newest["seed"]),
                float(newest["created_at"]),
                float(sum(float(r["duration_s"]) for r in same)),
            )
            continue
        committed = REPO_ROOT / Path(info.notebook).with_suffix(".ipynb")
        if committed.exists():
            chapters[info.slug] = Chapter(info, committed, "committed", None, None, None, None)
    return chapters


def _plotly_html(figure: dict) -> str:
    import plotly.io as pio

    return pio.to_html(figure, include_plotlyjs=False, full_html=False, include_mathjax=False, validate=False)


def _book_output(output: dict) -> dict | None:
    """An output as the book shows it (None: dropped). Plotly figures are rendered again for the local plotly.js
    (the saved HTML loads it from a CDN); the renderer's CDN loader is dropped; a widget without a static
    form gets a note instead of its Python repr."""
    data = output.get("data")
    if not isinstance(data, dict):
        return output
    data = dict(data)
    if PLOTLY_MIME in data:
        data["text/html"] = _plotly_html(data.pop(PLOTLY_MIME))
    elif PLOTLY_CDN_MARK in "".join(data.get("text/html", "")):
        return None
    if WIDGET_MIME in data:
        data.pop(WIDGET_MIME)
        if not {"text/html", "text/markdown", "image/png", "image/svg+xml"} & set(data):
            data = {"text/markdown": WIDGET_NOTE}
    return {**output, "data": data}


def _provenance(chapter: Chapter) -> str:
    if chapter.origin == "committed":
        return (
            "> This chapter is the notebook as committed in the repository (executed at the quick preset when it was "
            "written): the run store has no executed notebook of this method. `labkit run "
            f"{chapter.method.slug}` adds one."
        )
    when = dt.datetime.fromtimestamp(chapter.recorded_at, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    wall = chapter.wall_seconds
    wall_text = f"; the notebook took {wall:.1f} s" if wall is not None else ""
    return (
        f"> Executed at the **{chapter.preset}** preset, seed {chapter.seed}, on {when} "
        f"(`{chapter.notebook.name}`): run() took {chapter.run_seconds:.1f} s{wall_text}."
    )


def book_notebook(chapter: Chapter) -> str:
    """The chapter's notebook as JSON text for the book: outputs made offline-ready, provenance after the title."""
    nb = json.loads(chapter.notebook.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in (_book_output(o) for o in cell.get("outputs", [])) if o is not None]
    note = {"cell_type": "markdown", "metadata": {}, "source": _provenance(chapter)}
    first_markdown = next((i for i, c in enumerate(nb["cells"]) if c.get("cell_type") == "markdown"), -1)
    nb["cells"].insert(first_markdown + 1, note)
    nb.get("metadata", {}).pop("widgets", None)
    return json.dumps(nb, indent=1, ensure_ascii=False)


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_page(chapters: dict[str, Chapter], rows: list[Row], records: list[dict]) -> str:
    """The machine, versions and times page (MyST markdown)."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Machine, versions and times",
        "",
        "## The machine that built this report",
        "",
        "| | |",
        "|---|---|",
        f"| built | {now} |",
        f"| platform | {_md_cell(platform.platform())} |",
        f"| CPU | {_md_cell(_cpu_model())}, {os.cpu_count()} logical cores |",
        f"| Python | {platform.python_version()} |",
    ]
    lines += [f"| {dist} | {_version(dist)} |" for dist in LIBRARIES]
    devices: dict[str, int] = {}
    for r in records:
        devices[str(r.get("device"))] = devices.get(str(r.get("device")), 0) + 1
    lines += ["", "## Where the recorded runs ran", ""]
    if devices:
        lines += [f"- `{_md_cell(d)}`: {n} run{'s' * (n != 1)}" for d, n in sorted(devices.items())]
        lines += ["", "The runs may have been made on another machine than the one that built this report."]
    else:
        lines += ["The run store is empty: `labkit report --execute` runs every notebook first."]
    lines += [
        "",
        "## Times per notebook",
        "",
        "The chapter's notebook: papermill's wall time for the whole notebook (kernel start and imports included) and "
        "the time of the `run()` calls it recorded.",
        "",
        "| # | method | notebook | preset | notebook wall | run() time |",
        "|---|---|---|---|---|---|",
    ]
    for ch in sorted(chapters.values(), key=lambda c: c.method.id):
        wall = ch.wall_seconds
        lines.append(
            f"| {ch.method.id:02d} | {_md_cell(ch.method.short)} | `{_md_cell(ch.notebook.name)}` ({ch.origin}) | "
            f"{ch.preset or 'quick'} | {'' if wall is None else f'{wall:.1f} s'} | "
            f"{'' if ch.run_seconds is None else f'{ch.run_seconds:.1f} s'} |"
        )
    presets = presets_shown(rows)
    lines += [
        "",
        "## Times of the pooled runs",
        "",
        "The total `run()` time of the runs each scoreboard verdict rests on.",
        "",
        "| # | method | " + " | ".join(presets) + " |",
        "|---|---|" + "---|" * len(presets),
    ]
    for row in rows:
        cells = [
            f"{row.by_preset[p].seconds:.1f} s ({len(row.by_preset[p].seeds)} seeds)" if p in row.by_preset else ""
            for p in presets
        ]
        lines.append(f"| {row.method.id:02d} | {_md_cell(row.method.short)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def front_page(rows: list[Row]) -> str:
    """The scoreboard page (MyST markdown with the table as raw HTML)."""
    presets = presets_shown(rows)
    summary = []
    for preset in presets:
        counts = tally(rows, preset)
        recorded = sum(counts.values())
        words = ", ".join(f"{n} {v.value}" for v, n in counts.items())
        summary.append(f"- **{preset}**: {recorded} of {len(rows)} methods recorded; headline verdicts: {words}.")
    available = sum(r.method.available for r in rows)
    if not any(r.by_preset for r in rows):
        summary.append(
            "- The run store has no run yet: `make run` (or `labkit report --execute`) executes every notebook and "
            "records its claims; until then the chapters are the notebooks as committed."
        )
    return "\n".join(
        [
            "# labkit scoreboard",
            "",
            f"The {len(rows)} methods at a glance ({available} available). Each row states the paper's **headline "
            "claim**; each preset column gives its three-way verdict (holds / does not hold / inconclusive) from a "
            "95% interval of the mean over seeds against the margin fixed in the method's code before the run. The "
            "seeds are pooled over every recorded run of the method at that preset's default parameters (a seed "
            "counted once, from the newest run that covers it), and each cell says how many runs and seeds it rests "
            "on. The method's name opens its chapter: the newest executed notebook.",
            "",
            *summary,
            "",
            "```{raw} html",
            scoreboard_html(rows),
            "```",
            "",
            "More seeds: `labkit report --seeds 5` runs the missing seeds on Dask first. The "
            "[machine page](machine.md) lists the versions and times.",
            "",
        ]
    )


def toc(chapters: dict[str, Chapter]) -> dict:
    parts = []
    for family in FAMILIES:
        mine = sorted((c for c in chapters.values() if c.method.family == family), key=lambda c: c.method.id)
        if mine:
            parts.append(
                {
                    "caption": FAMILY_TITLES.get(family, family),
                    "chapters": [
                        {"file": c.source_name, "title": f"{c.method.id:02d} · {c.method.short}"} for c in mine
                    ],
                }
            )
    parts.append({"caption": "About this report", "chapters": [{"file": "machine"}]})
    return {"format": "jb-book", "root": "index", "parts": parts}


def config() -> dict:
    return {
        "title": "labkit report",
        "author": "labkit",
        "copyright": "",
        "only_build_toc_files": True,
        "exclude_patterns": ["_build", "**.ipynb_checkpoints"],
        "execute": {"execute_notebooks": "off"},
        "parse": {"myst_enable_extensions": ["colon_fence", "dollarmath", "amsmath"]},
        "html": {"use_repository_button": False, "use_issues_button": False, "home_page_in_navbar": True},
        "repository": {"url": ""},
        "launch_buttons": {"thebe": False, "binderhub_url": "", "colab_url": ""},
        "sphinx": {
            "config": {
                "html_static_path": ["_static"],
                "html_js_files": ["plotly.min.js", "katex/katex.min.js", "labkit-math.js"],
                "html_css_files": ["katex/katex.min.css", "labkit-report.css"],
                "nb_ipywidgets_js": {},
                "html_show_sourcelink": False,
                "suppress_warnings": ["mystnb.unknown_mime_type"],
            }
        },
    }


#: renders the MathJax markup with the local KaTeX when MathJax (from its CDN) did not load
MATH_FALLBACK_JS = """\
// labkit: equations are marked up for MathJax, loaded from a CDN. Offline, render them with the local KaTeX.
window.addEventListener("load", function () {
  if ((window.MathJax && window.MathJax.version) || !window.katex) { return; }
  document.querySelectorAll(".math").forEach(function (el) {
    var display = el.tagName === "DIV";
    var tex = el.textContent.trim().replace(/^\\\\[\\(\\[]/, "").replace(/\\\\[\\)\\]]$/, "");
    try {
      window.katex.render(tex, el, {displayMode: display, throwOnError: false});
      el.classList.add("lk-katex");
    } catch (err) { /* leave the TeX source as it is */ }
  });
});
"""

REPORT_CSS = """\
table.lk-scoreboard { border-collapse: collapse; width: 100%; font-size: 0.88em; }
table.lk-scoreboard th, table.lk-scoreboard td { border-bottom: 1px solid #ddd; padding: 6px; vertical-align: top;
  text-align: left; }
.lk-badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; color: #fff; }
.lk-holds { background: #1a7f37; }
.lk-fails { background: #b42318; }
.lk-unsure { background: #9a6700; }
.lk-quantity, .lk-basis, .lk-time, .lk-interval { font-size: 0.9em; color: #555; }
.lk-none { color: #888; }
.lk-paper { font-size: 0.85em; white-space: nowrap; }
.bd-main .bd-content .bd-article-container:has(table.lk-scoreboard) { max-width: 100%; }
div.math.lk-katex { text-align: center; }
"""


def _write(path: Path, text: str | bytes) -> None:
    """Write only when the content changed, so that Sphinx rebuilds only the pages that did."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_static(static: Path) -> None:
    from plotly.offline import get_plotlyjs

    _write(static / "plotly.min.js", get_plotlyjs())
    import panel

    katex = next((Path(panel.__file__).parent / "dist" / "bundled" / "katex").glob("katex@*/dist"), None)
    if katex is not None:
        _write(static / "katex" / "katex.min.js", (katex / "katex.min.js").read_bytes())
        # Panel ships no KaTeX fonts: drop the @font-face rules (the browser's fonts serve, with no failed requests)
        css = re.sub(r"@font-face\{[^}]*\}", "", (katex / "katex.min.css").read_text(encoding="utf-8"))
        _write(static / "katex" / "katex.min.css", css)
    else:  # no local KaTeX: an empty script keeps the page valid; MathJax from its CDN is the only renderer
        _write(static / "katex" / "katex.min.js", "")
        _write(static / "katex" / "katex.min.css", "")
    _write(static / "labkit-math.js", MATH_FALLBACK_JS)
    _write(static / "labkit-report.css", REPORT_CSS)


def write_book(src: Path, rows: list[Row], chapters: dict[str, Chapter], records: list[dict]) -> None:
    """The book's source: config, table of contents, front page, machine page, chapters and static files."""
    import yaml

    src.mkdir(parents=True, exist_ok=True)
    _write(src / "_config.yml", yaml.safe_dump(config(), sort_keys=False))
    _write(src / "_toc.yml", yaml.safe_dump(toc(chapters), sort_keys=False))
    _write(src / "index.md", front_page(rows))
    _write(src / "machine.md", machine_page(chapters, rows, records))
    wanted = set()
    for chapter in chapters.values():
        target = src / (chapter.source_name + ".ipynb")
        wanted.add(target)
        _write(target, book_notebook(chapter))
    if (src / "chapters").exists():
        for stale in (src / "chapters").rglob("*.ipynb"):
            if stale not in wanted:
                stale.unlink()
    write_static(src / "_static")


class ReportBuildError(RuntimeError):
    """``jupyter-book build`` failed; the message has the end of its output."""


def run_jupyter_book(src: Path, out: Path) -> Path:
    """``jupyter-book build`` in a child process (Sphinx keeps global state); returns the built front page."""
    import importlib.util

    if importlib.util.find_spec("jupyter_book") is None:
        raise ReportBuildError(
            "labkit report builds a Jupyter Book: install jupyter-book 1.x (`pip install jupyter-book==1.0.4.post1`, "
            "in labkit's dev extra)"
        )
    cmd = [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main()",
        "build",
        str(src),
        "--path-output",
        str(out),
        "--builder",
        "html",
        "-q",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise ReportBuildError(f"jupyter-book build failed (exit {done.returncode}):\n{tail}")
    return out / "_build" / "html" / "index.html"


REDIRECT = """<!doctype html><meta charset="utf-8"><title>labkit report</title>
<meta http-equiv="refresh" content="0; url=_build/html/index.html">
<p>The report is at <a href="_build/html/index.html">_build/html/index.html</a>.</p>
"""


def build_report(
    out: str | Path,
    *,
    store: RunStore | None = None,
    preset: str = "quick",
    execute: bool = False,
    runs_dir: str | Path = "runs",
    seeds: int | None = None,
    scheduler: str | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Execute (optionally), run the missing seeds (optionally), then write and build the book into ``out``.
    Returns the built front page; ``out/index.html`` redirects to it."""
    from .core.store import RunStore

    store = store or RunStore()  # a damaged store is refused before anything runs
    available = [m for m in METHODS if m.available]
    if execute:
        from .cli import execute_notebook

        for m in available:
            say(f"executing {m.id:02d} {m.short} at preset={preset} ...")
            done = execute_notebook(m.slug, preset, 0, "auto", {}, runs_dir)
            say(f"  {done['seconds']:.1f} s")
    if seeds:
        run_seeds = _run_seeds()
        say(f"seeds 0..{seeds - 1} of {len(available)} methods at preset={preset} (recorded runs are reused) ...")
        result = run_seeds([m.slug for m in available], preset, list(range(seeds)), scheduler=scheduler, store=store)
        failed = [r for r in result if r.get("status") == "failed"]
        say(f"  {len(result) - len(failed)} runs recorded or reused, {len(failed)} failed")
        for r in failed:
            say(f"  failed: {r['method']} seed {r['seed']}: {r.get('error', '')}")
    records = store_records(store)
    chapters = choose_chapters(records, METHODS)
    rows = build_rows(METHODS, records, {s: c.page for s, c in chapters.items()}, default_params)
    out = Path(out).resolve()
    src = out / "book"
    write_book(src, rows, chapters, records)
    say(f"building the book ({len(chapters)} chapters) ...")
    index = run_jupyter_book(src, out)
    _write(out / "index.html", REDIRECT)
    return index


def _run_seeds():
    try:
        from .sweep import run_seeds
    except ImportError as err:
        raise ValueError(f"--seeds needs labkit.sweep.run_seeds, which cannot be imported ({err})") from None
    return run_seeds

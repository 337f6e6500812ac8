"""Student content is inert wherever a person sees it (issue 18 item 1): course_grader/sanitise.py.

A student's markdown cell and rich outputs reach two pages as HTML: formgrader's page for the autograded notebook
(inside the instructor's Jupyter session) and the student's feedback page. The hostile payloads (tests/hostile.py:
script, event handlers, iframe, javascript: links, remote images, CSS url(), meta refresh, object, embed, form, in
a markdown cell and in HTML, SVG, JavaScript and markdown outputs) are shown live without the sanitiser (the
attack is real) and dead with it, in the page formgrader serves (nbgrader's own template) and in nbconvert's
other templates; what the student meant to be read stays, and what the grader needs (PNG plots, record
bundles, verdicts) is untouched. Then through the real worker: the autograded notebook and the feedback page of
a hostile submission. The browser's view is tests/test_browser_hostile.py.
"""

from __future__ import annotations

import base64
import collections
import copy
import re
from pathlib import Path

import nbformat
import pytest

from browser_tools import active_content, active_elements, formgrader_html, page_text
from course_grader.judging import VERDICT_ERROR, verdict_outputs
from course_grader.sanitise import SanitiseStudentContent, safe_markdown, sanitise
from course_grader.sanitise import safe_output as sanitise_output
from course_recorder import MIME
from hostile import HARMLESS, HARMLESS_OUTPUT, MARK, build, corpus, html_payload_markdown
from submissions import graded_class, notebook_name

ROOT = Path(__file__).resolve().parent.parent
PORT = 9  # the discard port: the payloads' fetches are only looked for in the page, never made
LISTENER = f"127.0.0.1:{PORT}"
# A PNG's first bytes, as matplotlib's inline backend stores a plot (base64 text).
PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")).decode()
RECORD = {"test": "test_channel_stats_values", "version": 1, "records": {"out": {"shape": [2, 3]}}}


def js(name: str) -> str:
    return f"top.{MARK}=(top.{MARK}||[]).concat('{name}')"


def hostile_notebook() -> nbformat.NotebookNode:
    """A graded notebook as a hostile student's kernel leaves it: the markdown payloads, a cell of rich outputs
    with script in every form a template renders, a raw HTML cell, widget state; and what must stay: a PNG plot,
    a failed test's verdict with its record bundle."""
    out = nbformat.v4.new_output
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    payloads = nbformat.v4.new_code_cell("display(...)")
    payloads.outputs = [
        out("display_data", data={"text/html": f"<table><tr><td>{HARMLESS_OUTPUT}</td></tr></table>"
                                               f"<script>{js('html-script')}</script>"
                                               f"<img src=x onerror=\"{js('html-onerror')}\">",
                                  "text/plain": "<IPython.core.display.HTML object>"}),
        out("display_data", data={"image/svg+xml": f'<svg xmlns="http://www.w3.org/2000/svg" onload="{js("svg")}">'
                                                   f'<script>{js("svg-script")}</script>'
                                                   f'<image href="http://{LISTENER}/svg-image"/></svg>',
                                  "text/plain": "<IPython.core.display.SVG object>"}),
        out("display_data", data={"application/javascript": js("javascript-output"),
                                  "text/plain": "<IPython.core.display.Javascript object>"}),
        out("display_data", data={"text/markdown": f"markdown output <img src=x onerror=\"{js('md-output')}\">"}),
        out("display_data", data={"text/html": f"<img src=x onerror=\"{js('isolated')}\">"},
            metadata={"text/html": {"isolated": True}}),
        out("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2},
                                  "text/plain": "IntSlider()"}),
        out("execute_result", data={"text/latex": f"$\\href{{javascript:{js('latex')}}}{{x}}$"}, execution_count=1),
        out("display_data", data={"image/png": PNG, "text/plain": "<Figure size 100x100>"},
            metadata={"image/png": {"width": 100, "height": 100}}),
        out("display_data", data={"image/png": f'x" onerror="{js("png")}', "text/plain": "not base64"},
            metadata={"filenames": {"image/png": f"http://{LISTENER}/png"}}),
    ]
    test = nbformat.v4.new_code_cell("check(rec)")
    test.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": 1,
                                 "grade_id": "test_channel_stats_values", "schema_version": 3}
    test.outputs = verdict_outputs(False, "The output's mean is off by 0.5 in channel 2.") + [
        out("display_data", data={MIME: RECORD, "text/plain": "records"})]
    raw = nbformat.v4.new_raw_cell(f"<script>{js('raw')}</script>raw text", metadata={"raw_mimetype": "text/html"})
    nb.cells = [nbformat.v4.new_markdown_cell(html_payload_markdown(PORT)), payloads, test, raw]
    return nb


def rendered(nb: nbformat.NotebookNode, tmp_path: Path, template: str) -> str:
    path = tmp_path / f"{template}.ipynb"
    nbformat.write(nb, path)
    return formgrader_html(path, template)


@pytest.mark.parametrize("template", ["formgrade", "lab", "classic"])
def test_the_payloads_run_without_the_sanitiser_and_not_with_it(tmp_path, template):
    nb = hostile_notebook()
    live = active_content(rendered(nb, tmp_path, template), MARK, LISTENER)
    # The attack is real: rendered as the notebook comes from the kernel, script and fetches reach the page.
    assert any("<script>" in f for f in live) and any("onerror" in f for f in live), live
    sanitise(nb)
    page = rendered(nb, tmp_path, template)
    assert active_content(page, MARK, LISTENER) == []
    for tag in ("<iframe srcdoc", "<object", "<embed", "<form", 'http-equiv="refresh"', f'href="http://{LISTENER}'):
        assert tag not in page, tag
    text = page_text(page)
    assert HARMLESS in text and HARMLESS_OUTPUT in text and "markdown output" in text


@pytest.mark.parametrize("template", ["formgrade", "lab"])
def test_the_sanitised_page_holds_no_more_active_markup_than_an_empty_notebooks(tmp_path, template):
    """Whatever the payloads' markers: no script, handler, frame, form or fetch beyond the template's own."""
    empty = active_elements(rendered(nbformat.v4.new_notebook(), tmp_path, template))
    nb = hostile_notebook()
    assert active_elements(rendered(nb, tmp_path, template)) - empty  # the attack is real
    sanitise(nb)
    assert active_elements(rendered(nb, tmp_path, template)) - empty == collections.Counter()


def test_what_the_grader_and_the_instructor_need_stays(tmp_path):
    nb = hostile_notebook()
    sanitise(nb)
    payloads, test = nb.cells[1], nb.cells[2]
    png = [o for o in payloads.outputs if "image/png" in o.get("data", {})]
    assert png and png[0].data["image/png"] == PNG and png[0].metadata == {"image/png": {"width": 100, "height": 100}}
    assert test.outputs[0].ename == VERDICT_ERROR and "channel 2" in test.outputs[0].evalue
    assert test.outputs[1].data[MIME] == RECORD
    # The SVG plot stays a picture (an <img> of it, where no script runs and nothing is fetched).
    svg = [o for o in payloads.outputs if "SVG object" in o.data.get("text/plain", "")][0]
    assert svg.data["text/html"].startswith('<img src="data:image/svg+xml;base64,')
    # A widget keeps its text; what had nothing else to show says what was removed.
    assert any(o.data == {"text/plain": "IntSlider()"} for o in payloads.outputs)
    assert any(o.data == {"text/plain": "[not shown: text/latex output]"} for o in payloads.outputs)
    assert "widgets" not in nb.metadata


def test_honest_markdown_is_left_as_written():
    """Every markdown cell of the course's own notebooks, and what students write: unchanged, character for
    character (math, code spans with <, quotes, tables, links, attachments)."""
    cells = [c.source for path in sorted((ROOT / "source" / "normalization").glob("*.ipynb"))
             for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
    assert cells
    written = [
        "**Answer.** With $\\sigma^2 < 1$ the `x < 0` branch never runs; see "
        "[the paper](https://arxiv.org/abs/1502.03167).",
        "> A quote & an ampersand\n\n```python\nif a < b and c > d:\n    pass\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |",
        "1. first\n2. second\n\n- [x] done\n\n$$\\frac{x-\\mu}{\\sqrt{\\sigma^2+\\epsilon}}$$",
        "![my plot](attachment:plot.png) and <http://example.org> and [top](#Batch-statistics)",
    ]
    attachments = {"plot.png": {"image/png": PNG}}
    for source in cells + written:
        assert safe_markdown(source, attachments) == source


def test_harmless_html_keeps_its_look():
    """A student's own markup that cannot run: kept as markup, not as text."""
    shown = safe_markdown('Line<br>two <span style="color: red">red</span> <sup>2</sup> <b>bold</b>\n\n'
                          '<table><tr><th>a</th></tr><tr><td>1</td></tr></table>')
    for kept in ("<br>", '<span style="color:red">red</span>', "<sup>2</sup>", "<b>bold</b>", "<th>a</th>"):
        assert kept in shown, shown


def test_mathjax_commands_that_link_style_or_load_are_shown_as_text():
    """MathJax typesets every `$...$` in a page's text, wherever it came from (a markdown escape `\\$`, an entity,
    an HTML output): `\\style` and `\\bbox` set CSS (url() fetches), `\\href` makes javascript: links, `\\require`
    loads code. Such a cell or output is shown as its text, in <pre> (which MathJax never typesets)."""
    text_only = re.compile(r"<div><pre>[^<]*</pre></div>")
    for source in (f"$\\style{{background-image:url(http://{LISTENER}/tex)}}{{x}}$",
                   f"\\$\\bbox[background:url(http://{LISTENER}/tex)]{{x}}\\$",
                   "$\\href{javascript:alert(1)}{x}$", "&#92;require{x} $y$", "<b>$\\cssId{x}{y}$</b>"):
        shown = safe_markdown(source)
        assert text_only.fullmatch(shown), (source, shown)
        assert safe_markdown(shown) == shown
    output = nbformat.v4.new_output("display_data", data={"text/html": "<i>$\\unicode{x41}$</i>"})
    assert sanitise_output(output).data["text/html"] == "<pre>&lt;i&gt;$\\unicode{x41}$&lt;/i&gt;</pre>"
    # A raw cell reaches the page as HTML too (nbconvert's HTML exporter renders raw cells with no format or an
    # HTML one), so MathJax typesets it like the rest.
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_raw_cell("<i>$\\href{javascript:alert(1)}{x}$</i>"),
                nbformat.v4.new_raw_cell("$\\require{x}$", metadata={"raw_mimetype": "text/html"})]
    sanitise(nb)
    assert [cell.source for cell in nb.cells] == ["<pre>&lt;i&gt;$\\href{javascript:alert(1)}{x}$&lt;/i&gt;</pre>",
                                                  "<pre>$\\require{x}$</pre>"]


def test_sanitising_again_changes_nothing():
    """The feedback is built from the autograded copy, which is already sanitised."""
    once = hostile_notebook()
    sanitise(once)
    twice = copy.deepcopy(once)
    sanitise(twice)
    assert twice == once


def test_the_preprocessor_is_in_autograde_after_scoring_and_in_feedback(tmp_path):
    from course_grader.autograde import Job, _config
    from course_grader.judging import StudentCopy

    c = _config(Job("s", "sub", "rel", "src", "db", str(tmp_path)), tmp_path, tmp_path / "r.jsonl")
    autograde = c.Autograde.autograde_preprocessors
    assert autograde[-1] is SanitiseStudentContent  # after SaveAutoGrades: scores never see it
    feedback = c.GenerateFeedback.preprocessors
    assert feedback.index(SanitiseStudentContent) == feedback.index(StudentCopy) + 1


def test_the_worker_writes_an_inert_autograded_notebook_and_feedback_page(tmp_path):
    """A hostile submission through the real worker, judge and nbgrader (Q1 with the instructor's solutions and
    the payloads of tests/hostile.py): nothing active in formgrader's page or the feedback page, the student's
    text shown, the plot kept, and every test still passes (the sanitiser never costs a point)."""
    attack = next(a for a in corpus(tmp_path, tmp_path, tmp_path, PORT) if a.name == "html-that-runs")
    seen = {}

    def make(release, source):
        seen["course"] = release.parent.parent
        return {"hostile-html": (attack.notebook, build(attack, release, source))}

    with graded_class(make, "test-inert-html-") as (graded, _, _):
        student = graded["hostile-html"]
        assert student.points and student.total == student.max_total, student
        course = seen["course"]
        name = notebook_name(course, "Q1")
        autograded = course / "autograded" / "hostile-html" / "normalization" / f"{name}.ipynb"
        page = formgrader_html(autograded)
        assert active_content(page, MARK, LISTENER) == []
        assert HARMLESS in page_text(page) and HARMLESS_OUTPUT in page_text(page)
        nb = nbformat.read(autograded, as_version=4)
        assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        feedback = (course / "feedback" / "hostile-html" / "normalization" / f"{name}.html").read_text()
        assert active_content(feedback, MARK, LISTENER) == []
        assert HARMLESS in page_text(feedback)



def test_html_too_large_to_parse_safely_is_shown_as_text_unparsed(monkeypatch):
    """A parser's time grows with the square of the nesting depth (100,000 nested <div>s: 16 s in nh3): markup with
    more than MAX_TAGS tags is never given to a parser, only escaped."""
    from course_grader import sanitise as module

    def refuse(html):
        raise AssertionError("a parser was given the nested markup")

    monkeypatch.setattr(module, "clean_html", refuse)
    monkeypatch.setattr(module, "MarkdownWithMath", refuse)
    deep = "<div>" * (module.MAX_TAGS + 1) + f"<script>{js('deep')}</script>"
    nb = nbformat.v4.new_notebook()
    output = nbformat.v4.new_output("display_data", data={"text/html": deep})
    nb.cells = [nbformat.v4.new_markdown_cell(deep), nbformat.v4.new_code_cell(outputs=[output]),
                nbformat.v4.new_raw_cell(deep)]
    sanitise(nb)
    shown = [nb.cells[0].source, nb.cells[1].outputs[0].data["text/html"], nb.cells[2].source]
    assert shown[0].startswith("<div><pre>&lt;div&gt;") and shown[1].startswith("<pre>&lt;div&gt;")
    assert shown[2].startswith("<pre>&lt;div&gt;")
    assert all(active_content(page, MARK) == [] for page in shown)


def test_content_that_breaks_the_sanitiser_is_shown_as_text(monkeypatch):
    """Whatever a student's content does to a parser (an exception, a lone surrogate nh3 cannot take), the
    notebook is still sanitised and graded: that cell is shown as escaped text, its outputs as their text."""
    from course_grader import sanitise as module

    assert module.clean_html("a\ud800<b>b</b>") == "a?<b>b</b>"

    def broken(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(module, "safe_markdown", broken)
    monkeypatch.setattr(module, "safe_output", broken)
    nb = hostile_notebook()
    sanitise(nb)
    assert nb.cells[0].source.startswith("<div><pre>### Batch statistics&#10;")
    assert active_content(rendered_text(nb), MARK, LISTENER) == []
    assert all(set(o.get("data", {})) <= {"text/plain"} for o in nb.cells[1].outputs)
    assert nb.cells[2].outputs[1]["data"][MIME] == RECORD  # the judge's record bundle stays


def rendered_text(nb: nbformat.NotebookNode) -> str:
    """The notebook's markdown sources and output values, joined: what a page would take from them."""
    parts = [c.source for c in nb.cells if c.cell_type != "code"]
    parts += [str(v) for c in nb.cells if c.cell_type == "code" for o in c.outputs for v in o.get("data", {}).values()]
    return "\n".join(parts)

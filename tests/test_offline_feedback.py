"""The feedback page works offline (course_grader/mathml.py, autograde.feedback_exporter): its math is MathML
written into the page, it loads no MathJax from a CDN, and it declares its language. The MathML is built from text a
student may have written, so what a formula can smuggle into the page is tested first."""

from __future__ import annotations

import re

from course_grader.mathml import convert_markdown, to_mathml

SCRIPT = "$\\text{<script>alert(1)</script>}$"


def test_formulas_become_mathml_and_code_and_escaped_dollars_stay_text():
    out = convert_markdown("The batch mean $\\mu_B = \\frac{1}{m}\\sum_{i=1}^m x_i$, then\n\n$$\\sigma_B^2$$\n\n"
                           "costs \\$5, and `$x$` is code.")
    assert out.count("<math") == 2 and 'display="block"' in out and "<mfrac>" in out
    assert "\\$5" in out and "`$x$`" in out


def test_a_formula_cannot_put_markup_or_links_into_the_page():
    from latex2mathml.converter import convert

    assert "<script>" in convert("\\text{<script>alert(1)</script>}"), "the converter alone lets markup through"
    out = convert_markdown(f"a {SCRIPT} b")
    assert "<script" not in out and "&lt;script&gt;" in out  # shown as its source, as text
    for tex in ("\\href{javascript:alert(1)}{x}", "\\style{background:url(http://x)}{x}", "\\class{x}{y}"):
        mathml = to_mathml(tex) or ""
        assert not re.search(r"href|style|class|javascript|url\(", mathml), (tex, mathml)


def test_a_formula_inside_html_the_sanitiser_kept_is_left_alone():
    html = '<p title="$x$">the mean $\\mu$</p>'
    assert convert_markdown(html) == html


def test_the_demo_class_feedback_pages_have_mathml_a_language_and_no_mathjax(graded, course):
    pages = sorted((course / "feedback").rglob("*.html"))
    assert pages, "no feedback page was written"
    texts = [page.read_text() for page in pages]
    assert all(re.search(r'<html lang="en"', text) for text in texts)
    assert not any(re.search(r"<script[^>]+src=[^>]*mathjax", text, re.I) for text in texts)
    assert any("<math" in text for text in texts), "no page has math"
    assert not any(re.search(r"<math[^>]*>(?:(?!</math>).)*<script", text, re.S) for text in texts)

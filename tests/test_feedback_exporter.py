"""The feedback pages' exporter (autograde.feedback_exporter) compiles its templates once per worker process, renders
the same page from its cache as from a fresh compile, and differs from nbconvert's own HTMLExporter only in loading
no MathJax (the math is MathML already: test_offline_feedback.py)."""

from __future__ import annotations

import re

import jinja2
import nbformat
from nbconvert.exporters import HTMLExporter

from course_grader.autograde import feedback_exporter


def test_templates_compile_once_and_render_what_nbconvert_renders(monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Q1\nThe mean $\\mu_B$ of the batch."),
                                         nbformat.v4.new_code_cell("print(1)", outputs=[
                                             nbformat.v4.new_output("stream", name="stdout", text="1\n")])])
    stock, _ = HTMLExporter(template_name="classic").from_notebook_node(nb)
    compiled = []
    compile_ = jinja2.Environment.compile

    def counting(self, *args, **kwargs):
        compiled.append(args[1] if len(args) > 1 else kwargs.get("name"))
        return compile_(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    exporter = feedback_exporter()
    first, _ = exporter(template_name="classic").from_notebook_node(nb)
    before = len(compiled)
    again, _ = exporter(template_name="classic").from_notebook_node(nb)  # a new exporter, as nbgrader makes
    assert again == first
    assert "mathjax" in stock.lower() and "<script" in stock
    mathjax = stock.index("<!-- Load mathjax -->")
    assert first.replace("\n", "") in stock.replace("\n", "") or first[:mathjax] == stock[:mathjax]
    assert not re.search(r"<script[^>]*src=[^>]*mathjax", first, re.I)
    assert before > 0 and len(compiled) == before, f"compiled again: {compiled[before:]}"

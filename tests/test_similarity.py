"""The class report's similarity section (course_grader/similarity.py): the demo class's copier is ranked first and
no honest pair is flagged; every correct alternative in the mutation catalogue, copied and disguised, is found among
the others, which are never flagged; what does not count (the release, the model solution) does not; the student's
code is inert in the page; the ranking is the same in every process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_grader import class_report, similarity
from course_grader.settings import ASSIGNMENT
from course_mutation import catalogue, demo

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "source" / ASSIGNMENT
RELEASE = ROOT / "release" / ASSIGNMENT


def _notebook(q: str) -> str:
    return next(p.stem for p in SOURCE.glob(f"{q}_*.ipynb"))


def _class_of(q: str):
    """{name: code} for the model solution and each correct alternative of notebook q (the others' cells the
    model's), the boilerplate, and a function giving a variant's code (disguised: as the copier writes it)."""
    name = _notebook(q)
    ids = similarity._solution_ids(RELEASE / f"{name}.ipynb")
    cells = {c.metadata.nbgrader["grade_id"]: c.source for c in nbformat.read(SOURCE / f"{name}.ipynb", 4).cells
             if c.metadata.get("nbgrader", {}).get("grade_id") in ids}

    def code(variant=None, disguised=False):
        mine = dict(cells)
        if variant is not None:
            text = variant.source(cells[variant.solution])
            mine[variant.solution] = demo.disguise(text) if disguised else text
        return "\n".join(demo.reference_code(mine[g]) for g in ids)

    boilerplate = [similarity.solution_code(RELEASE / f"{name}.ipynb", ids)[0], code()]
    honest = {v.name: code(v) for v in catalogue()[q] if v.correct}
    return name, {"model": code(), **honest}, boilerplate, code


@pytest.mark.parametrize("q", sorted(catalogue()))
def test_correct_alternatives_are_never_flagged_and_a_disguised_copy_of_each_is_found_first(q):
    """The honest corpus: the catalogue's correct alternatives were written independently (the ones written as a
    variant of another are mistakes, not here). The attack: each one copied with its names renamed and independent
    lines swapped (demo.disguise), added to that class."""
    name, honest, boilerplate, code = _class_of(q)
    pairs, _ = similarity.compare({name: honest}, {name: boilerplate}, detail=0)
    assert not [(p.a, p.b) for p in pairs if p.flagged], "independent correct solutions flagged"
    caught = 0
    for variant in (v for v in catalogue()[q] if v.correct):
        copy = code(variant, disguised=True)  # the same text where there is no local name or line to swap
        pairs, _ = similarity.compare({name: {**honest, "copier": copy}}, {name: boilerplate}, detail=0)
        top = pairs[0]
        assert {top.a, top.b} == {"copier", variant.name}, (variant.name, [(p.a, p.b, p.shared) for p in pairs[:3]])
        assert [(p.a, p.b) for p in pairs if p.flagged] in ([], [(top.a, top.b)])
        own = similarity._fingerprint(honest[variant.name], similarity.given(boilerplate)).token_coverage
        if own >= 2 * similarity.MIN_SHARED:  # a copy of less than about six lines of own code may rank, not flag
            assert top.flagged, (variant.name, top.shared, top.matches[0].fractions)
            caught += 1
    # Q6's correct alternatives are all short edits of the model (under 160 characters of their own): none must flag
    assert caught or q == "Q6", "no alternative long enough to be flagged"


def test_what_the_release_and_the_model_solution_hold_does_not_count():
    name, honest, boilerplate, _ = _class_of("Q3")
    both = {name: {"a": honest["model"], "b": honest["model"]}}
    alone = similarity.compare(both, {name: boilerplate[:1]}, detail=0)[0]  # the release only
    assert alone and alone[0].flagged, "two copies of the model solution must match when it is not boilerplate"
    assert similarity.compare(both, {name: boilerplate}, detail=0)[0] == []
    given = {name: {"a": boilerplate[0], "b": boilerplate[0]}}  # two untouched releases
    assert similarity.compare(given, {name: boilerplate[:1]}, detail=0)[0] == []


def test_a_passage_most_of_the_class_shares_is_not_evidence():
    """MOSS's -m: code more than COMMON_SHARE of the class (and more than COMMON_MIN students) has does not count."""
    line = "def f(x):\n    return (x - x.mean(dim=(0, 2, 3))) / (x.var(dim=(0, 2, 3)) + 1e-5).sqrt() * 2 + 1\n"
    many = {f"s{i}": line + f"\ny{i} = {i}\n" for i in range(8)}
    assert similarity.compare({"nb": many}, {"nb": []}, detail=0)[0] == []
    few = {**{f"s{i}": f"z = {i}\n" for i in range(8)}, "s0": line, "s1": line}
    pairs = similarity.compare({"nb": few}, {"nb": []}, detail=0)[0]
    assert [(p.a, p.b) for p in pairs] == [("s0", "s1")]


def test_student_code_is_inert_in_the_page_and_bounded(tmp_path):
    hostile = ('def forward(self, x):\n    s = "</pre><script>alert(1)</script><img src=x onerror=alert(2)>"\n'
               '    return x.mean(dim=(0, 2, 3), keepdim=True) * x.var(dim=(0, 2, 3), keepdim=True) + len(s)\n')
    pairs, _ = similarity.compare({"Q3_x": {"a": hostile, "b": hostile}}, {"Q3_x": []})
    marked = pairs[0].matches[0].marked
    for side in marked:
        assert "<script" not in side and "<img" not in side and "&lt;script&gt;" in side
        assert set(side.replace("<mark>", "").replace("</mark>", "")) .isdisjoint("<>")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1\n" * (similarity.MAX_CODE_CHARS // 3))
    cell.metadata["nbgrader"] = {"grade_id": "sol", "solution": True}
    odd = nbformat.v4.new_code_cell("y = 2")
    odd.metadata["nbgrader"] = "not a dict"
    nb.cells = [odd, cell]
    path = tmp_path / "big.ipynb"
    nbformat.write(nb, path)
    code, note = similarity.solution_code(path, ["sol"])
    assert len(code) == similarity.MAX_CODE_CHARS and "cut" in note
    (tmp_path / "bad.ipynb").write_text("{not json")
    assert similarity.solution_code(tmp_path / "bad.ipynb", ["sol"]) == ("", "not a readable notebook")
    odd = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        "a string", {"cell_type": "code", "metadata": [], "source": "x"},
        {"cell_type": "code", "metadata": {"nbgrader": {"grade_id": ["sol"]}}, "source": "x"},
        {"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "sol"}}, "source": ["a = 1\n", 2]},
        {"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "sol"}}, "source": "b = 2\n"}]}
    (tmp_path / "odd.ipynb").write_text(json.dumps(odd))
    assert similarity.solution_code(tmp_path / "odd.ipynb", ["sol"]) == ("b = 2\n", "")


RANK = """
import json, sys
from pathlib import Path
from course_grader import similarity
sim = similarity.collect(Path(sys.argv[1]), sys.argv[2:])
print(json.dumps([[p.a, p.b, p.shared, [[m.notebook, m.shared, m.fractions] for m in p.matches]] for p in sim.pairs]))
"""


def test_the_same_ranking_in_every_process(graded, course):
    """copydetect hashes with Python's salted str hash: with a window of 1 no fingerprint choice depends on it."""
    students = [p.student for p in demo.plans(sorted(p.stem for p in RELEASE.glob("*.ipynb")), ["x"], ["x"])]
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", RANK, str(course), *students], env=env, capture_output=True,
                             text=True, check=True)
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1] and runs[0]


def test_the_demo_copier_is_ranked_first_and_no_honest_pair_is_flagged(graded, course, capsys):
    """make grade's class report: copier copied dave's Q3 and Q8 (renamed, reordered); nobody else copied. The
    terminal names the flagged pair too."""
    from course_grader.__main__ import main

    assert main(["--root", str(course), "--report"]) == 0
    said = capsys.readouterr().out
    html, table = class_report.paths(course / "grades.csv")
    with open(table, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["section"] == "similarity"]
    victim, copied = demo.COPIED
    first = [r for r in rows if r["item"] == "1"]
    assert {r["students"] for r in first} == {f"copier {victim}"}
    flagged = {(r["students"], r["question"]) for r in rows if r["detail"].endswith("flagged")}
    assert flagged == {(f"copier {victim}", q) for q in copied}
    assert f"copier and {victim} ({', '.join(copied)})" in said
    page = html.read_text()
    assert "A reason to look, not a verdict" in page and "<mark>" in page
    second = max((int(r["of"]) for r in rows if r["item"] != "1"), default=0)
    assert int(first[0]["of"]) > 2 * second, "the copier should stand far above the best honest pair"

"""Ordinary notebook habits (tests/habits.py) graded as one class through the real pipeline: every correct
submission keeps full marks, test by test, and the grader says nothing about it (no tampering, no delegation,
nothing held for review). Issue 17, item 1."""

from __future__ import annotations

import pytest

from habits import build, corpus
from submissions import graded_class


@pytest.fixture(scope="module")
def habits():
    items = corpus()
    students = {f"h{i:02d}-{h.name}": h for i, h in enumerate(items)}

    def make(release, source):
        return {s: build(h, release, source) for s, h in students.items()}

    with graded_class(make, "test-habits-") as (graded, seconds, _):
        yield {"habits": items, "students": students, "graded": graded, "seconds": seconds}


def _table(h) -> str:
    lines = [f"ordinary habits: {len(h['students'])} correct submissions graded in {h['seconds']:.0f} s (2 jobs)",
             f"{'habit':34s} {'nb':3s} {'points':>9s}  findings"]
    for student, habit in h["students"].items():
        g = h["graded"][student]
        lost = [f"{t} {p:g}/{g.maximum[t]:g}" for t, p in g.points.items() if p < g.maximum[t]]
        said = "; ".join([*g.findings, *(["lost: " + ", ".join(lost)] if lost else [])])[:220] or "-"
        mark = "" if g.total == g.max_total and not g.findings else "  <--"
        lines.append(f"{habit.name:34s} {habit.question:3s} {g.total:4g}/{g.max_total:<4g}  {said}{mark}")
    return "\n".join(lines)


def test_the_corpus_is_large_and_spread(habits):
    items = habits["habits"]
    assert len(items) >= 40
    assert {h.question for h in items} == {f"Q{i}" for i in range(1, 10)}
    places = {p.split()[0] for h in items for p in h.places}
    assert {"first", "after", "in"} <= places, places
    assert len({h.name for h in items}) == len(items)


def test_every_habit_keeps_full_marks_with_no_finding(habits, capsys):
    with capsys.disabled():
        print("\n" + _table(habits))
    lost = {s: {t: (p, g.maximum[t]) for t, p in g.points.items() if p < g.maximum[t]} or "not graded"
            for s, g in habits["graded"].items() if not g.points or g.total < g.max_total}
    flagged = {s: g.findings for s, g in habits["graded"].items() if g.findings}
    assert not lost and not flagged, {"lost points": lost, "findings": flagged}

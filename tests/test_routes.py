"""Run-time delegation (tests/routes.py) graded as one class through the real pipeline, with the plain
delegation of each notebook (the catalogue's delegates_to_* variant) as its base: no route scores more, test by
test, than plain delegation of the same notebook. Issue 17, item 2."""

from __future__ import annotations

import pytest

from routes import PLAIN, WRONG, base_notebook, base_variant, build, corpus
from submissions import graded_class


def _base(question: str, base: str) -> str:
    return f"base-{question.lower()}-{base}"


@pytest.fixture(scope="module")
def routes():
    items = corpus()
    students = {f"r{i:02d}-{r.name}": r for i, r in enumerate(items)}

    def make(release, source):
        """The bases first (plain delegation of every notebook, the wrong bases), then the routes."""
        submissions = {}
        for question in sorted({r.question for r in items}):
            submissions[_base(question, "plain")] = base_notebook(question, "plain", release, source)
        for question in sorted({r.question for r in items if r.base == "wrong"}):
            submissions[_base(question, "wrong")] = base_notebook(question, "wrong", release, source)
        submissions.update({s: build(r, release, source) for s, r in students.items()})
        return submissions

    with graded_class(make, "test-routes-") as (graded, seconds, _):
        yield {"routes": items, "students": students, "graded": graded, "seconds": seconds}


def _gained(r, student: str) -> dict[str, tuple[float, float]]:
    """Tests where the route scored more than plain delegation: test -> (route's points, plain's points)."""
    route = r["students"][student]
    mine, plain = r["graded"][student].points, r["graded"][_base(route.question, "plain")].points
    return {t: (p, plain.get(t, 0.0)) for t, p in mine.items() if p > plain.get(t, 0.0)}


def _table(r) -> str:
    g = r["graded"]
    lines = [f"run-time delegation: {len(r['students'])} routes and {len(g) - len(r['students'])} bases graded in "
             f"{r['seconds']:.0f} s (2 jobs)",
             f"{'route':28s} {'nb':3s} {'route':>6s} {'plain':>6s} {'max':>4s}  tests above plain delegation"]
    for question in sorted({x.question for x in r["routes"]}):
        plain = g[_base(question, "plain")]
        lines.append(f"{'(plain: ' + PLAIN[question][1] + ')':28s} {question:3s} {'':6s} {plain.total:6g} "
                     f"{plain.max_total:4g}  [{'; '.join(plain.findings)[:110]}]")
        if question in WRONG:
            wrong = g[_base(question, "wrong")]
            lines.append(f"{'(wrong: ' + WRONG[question] + ')':28s} {question:3s} {wrong.total:6g} {'':6s} "
                         f"{wrong.max_total:4g}  the base of the routes marked wrong")
        for student, route in r["students"].items():
            if route.question != question:
                continue
            more = _gained(r, student)
            said = ", ".join(f"{t} {p:g}>{q:g}" for t, (p, q) in more.items()) or "-"
            base = " (wrong base)" if route.base == "wrong" else ""
            found = f"  [{'; '.join(g[student].findings)[:110]}]" if g[student].findings else ""
            lines.append(f"{route.name:28s} {question:3s} {g[student].total:6g} {plain.total:6g} "
                         f"{g[student].max_total:4g}  {said}{base}{found}")
    return "\n".join(lines)


def test_the_corpus_is_large_enough(routes):
    assert len(routes["routes"]) >= 20
    assert {r.question for r in routes["routes"]} == set(PLAIN)
    assert len({r.name for r in routes["routes"]}) == len(routes["routes"])


def test_plain_delegation_loses_its_layers_points(routes):
    """The bound means something: each plain delegation loses the tests the catalogue says it fails."""
    kept = {}
    for question in PLAIN:
        graded = routes["graded"][_base(question, "plain")]
        kept.update({f"{question} {t}": graded.points.get(t) for t in base_variant(question, "plain").fails
                     if graded.points.get(t, 0.0) >= graded.maximum[t]})
    assert not kept, kept


def test_no_route_scores_more_than_plain_delegation(routes, capsys):
    with capsys.disabled():
        print("\n" + _table(routes))
    gained = {s: _gained(routes, s) for s in routes["students"] if _gained(routes, s)}
    ungraded = [s for s in routes["students"] if not routes["graded"][s].points]
    assert not gained and not ungraded, {"gained": gained, "not graded": ungraded}

"""The project's own mutation tests: every hidden test catches the mistakes it is for, names them,
and gives full marks to correct alternatives (course_mutation/); the visible checks students run before
they submit catch most mistakes and never fail a correct answer.

Each notebook's reference solutions must pass every test; each known-wrong variant must lose points
on the tests its entry names (and, where it says so, the failure message must name the mistake); each
correct alternative, written differently from the reference, must get full marks. The visible checks
(the test cells without their hidden part, as Validate runs them) must pass every correct alternative,
must not fail a test that grading passes (a student would be told a right answer is wrong), and catch
at least VISIBLE_TARGET of each notebook's catalogued mistakes; test_visible_catch_rates prints the rates.
"""

from __future__ import annotations

import functools

import pytest

from course_mutation import catalogue, find
from course_lib.mistakes import MISTAKES, NAMED
from course_mutation.harness import notebook_path, run_notebook, run_variant, run_visible, variant_code

CATALOGUE = catalogue()
MIN_WRONG, MIN_CORRECT = 6, 2
# The share of each notebook's catalogued mistakes its visible checks (course_lib.checks, and the asserts inside
# student_checks) must catch before a student submits. What they cannot see is delegation to torch's own
# function (its output is right) and the few mistakes only other shapes reveal.
VISIBLE_TARGET = 0.8


@functools.cache
def _visible(notebook: str, name: str) -> dict[str, str]:
    """{test: the visible part's error, or ""} for one variant (cached: several tests read it)."""
    return run_visible(notebook, variant_code(notebook, find(notebook, name)))


def _visible_failures(notebook: str, name: str) -> dict[str, str]:
    return {test: error for test, error in _visible(notebook, name).items() if error}


def _cases():
    for notebook, variants in sorted(CATALOGUE.items()):
        for variant in variants:
            yield pytest.param(notebook, variant, id=f"{notebook}-{variant.name}")


@pytest.mark.parametrize("notebook", sorted(CATALOGUE))
def test_reference_solutions_get_full_marks(notebook):
    result = run_notebook(notebook_path(notebook))
    assert result.error is None, result.error
    assert result.tests, f"{notebook} has no graded test cells"
    failed = {gid: result.tests[gid].output for gid in result.failed()}
    assert not failed, f"reference solution fails: {failed}"


@pytest.mark.parametrize("notebook,variant", list(_cases()))
def test_variant(notebook, variant):
    visible = _visible_failures(notebook, variant.name)
    if variant.correct:
        result = run_variant(notebook, variant)
        failed = {gid: result.tests[gid].output for gid in result.failed()}
        assert not failed, f"correct alternative {variant.name!r} lost points: {failed}"
        assert not visible, f"correct alternative {variant.name!r} fails visible checks: {visible}"
        return
    assert variant.fails, f"{variant.name}: a mistake must name the tests that catch it"
    result = run_variant(notebook, variant, only=set(variant.fails) | set(visible))
    stricter = {gid: visible[gid] for gid in visible if result.tests[gid].passed}
    assert not stricter, f"{variant.name}: visible checks fail tests that grading passes: {stricter}"
    missing = set(variant.fails) - set(result.tests)
    assert not missing, f"{variant.name}: no test cells named {sorted(missing)} in {notebook}"
    survived = [gid for gid in variant.fails if result.tests[gid].passed]
    assert not survived, f"mistake {variant.name!r} ({variant.mistake}) was not caught by {survived}"
    named = {gid: result.tests[gid].mistake for gid in variant.fails if result.tests[gid].mistake is not None}
    for gid, mistake in named.items():  # a mistake named as data is a catalogue id; the student reads its sentence
        assert mistake in MISTAKES, f"{variant.name}: {gid} names {mistake!r}, which is not in course_lib.mistakes"
        assert NAMED + MISTAKES[mistake] in result.tests[gid].output, (
            f"{variant.name}: {gid} names the mistake {mistake!r}, but its message does not say it:\n"
            f"{result.tests[gid].output}")
    if variant.names:
        assert variant.names in named.values(), (
            f"{variant.name}: a failed test's verdict should name the mistake {variant.names!r}; they named {named}")
    if variant.says:
        outputs = " ".join(result.tests[gid].output for gid in variant.fails).lower()
        assert variant.says.lower() in outputs, (
            f"{variant.name}: the failure should name the mistake ({variant.says!r}); it said:\n{outputs}"
        )


def test_catalogue_is_large_enough():
    """At least 6 known-wrong variants and 2 correct alternatives for every graded solution cell."""
    short = []
    for notebook, variants in CATALOGUE.items():
        for solution in {v.solution for v in variants}:
            wrong = sum(1 for v in variants if v.solution == solution and not v.correct)
            right = sum(1 for v in variants if v.solution == solution and v.correct)
            if wrong < MIN_WRONG or right < MIN_CORRECT:
                short.append(f"{notebook}/{solution}: {wrong} wrong, {right} correct")
    assert CATALOGUE, "no mutation catalogue found"
    assert not short, short


def test_every_solution_cell_has_a_catalogue():
    """A graded solution cell added to a notebook without mutants would be untested."""
    from course_mutation.harness import SOURCE, read_cells

    missing = []
    for path in sorted(SOURCE.glob("Q*.ipynb")):
        notebook = path.name.split("_")[0]
        covered = {v.solution for v in CATALOGUE.get(notebook, [])}
        missing += [f"{notebook}/{c.grade_id}" for c in read_cells(path) if c.kind == "solution" and c.grade_id not in covered]
    assert not missing, f"solution cells with no mutation catalogue: {missing}"


def test_visible_catch_rates(capsys):
    """Per notebook: how many catalogued mistakes the visible checks catch before submission (printed)."""
    low = []
    for notebook, variants in sorted(CATALOGUE.items()):
        wrong = [v for v in variants if not v.correct]
        caught = [v.name for v in wrong if _visible_failures(notebook, v.name)]
        rate = len(caught) / len(wrong)
        missed = sorted({v.name for v in wrong} - set(caught))
        line = f"visible checks, {notebook}: {len(caught)}/{len(wrong)} catalogued mistakes caught ({rate:.0%})"
        cells = sorted({v.solution for v in wrong}, key=[v.solution for v in wrong].index)
        parts = [f"{cell} {sum(v.name in caught for v in wrong if v.solution == cell)}/"
                 f"{sum(v.solution == cell for v in wrong)}" for cell in cells] if len(cells) > 1 else []
        with capsys.disabled():
            print(f"\n{line}{' (' + ', '.join(parts) + ')' if parts else ''}; missed: {', '.join(missed) or 'none'}",
                  end="")
        if rate < VISIBLE_TARGET:
            low.append(f"{line}; missed: {missed}")
    assert not low, "\n".join(low)


def test_visible_check_names_the_unbiased_variance():
    """The lesson's own GroupNorm mistake is named by the first visible output check, in words a student can act on."""
    failures = _visible_failures("Q8", "unbiased_variance")
    message = failures.get("test_output_matches_nn_groupnorm", "")
    assert "UNBIASED variance" in message and "biased variance" in message, failures

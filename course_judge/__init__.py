"""The judge: decide every hidden test from the values a grading kernel recorded. Grader process only.

The kernel ran the student's code on the tests' inputs and recorded the raw results (course_recorder).
Here, in a process the kernel cannot reach, each test's verdict function (course_judge.qN) regenerates the
inputs, computes the right answers with the reference implementations (course_judge.reference), compares
and names the mistake. The audit (course_judge.audit) adds what values cannot show: delegation to torch's
own normalization and tampering with the kernel. `judge_notebook` returns one Verdict per test cell; the
grading pipeline writes it into the cell before nbgrader scores it, and the mutation harness reads it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from course_judge.audit import TORCH_NORMS, Audit, audit
from course_judge.compare import TORCH_WHY
from course_judge.records import Fail, Malformed, Missing, Records, TooLarge, quote
from course_judge.secrets import WITHHELD, bounded, clip, secret_lines
from course_recorder import GUARD
from course_recorder.wire import MAX_NAME, MAX_TEXT, cut


@dataclass
class Spec:
    """One hidden test: its verdict function and the solution cells whose delegation costs it its points."""

    question: str
    test: str
    judge: Callable[[Records], None]
    uses: tuple[str, ...] = ()
    after: dict[str, str] = field(default_factory=dict)  # an earlier test -> what its failure explains here
    errors: dict[str, str] = field(default_factory=dict)  # an exception the cell stopped with -> a hint


@dataclass
class Verdict:
    """The judge's decision on one test cell."""

    test: str
    passed: bool
    message: str = ""
    judge_error: str = ""  # the judge itself failed (a grader problem, reported to the instructor)
    note: str = ""  # what the instructor should know about this test (the refusal was switched off...)
    # The catalogued mistake the judge named (Fail.mistake, its course_lib.mistakes id), as data: the message quotes
    # the student's text too.
    mistake: str | None = None


@dataclass
class NotebookVerdicts:
    """Every test cell's verdict, and what the instructor should know about the notebook."""

    verdicts: dict[str, Verdict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # What the audit found and could not judge by itself (quoted, scrubbed): the notebook is held for the
    # instructor's review; its scores stand until the instructor clears or confirms it.
    review: list[str] = field(default_factory=list)


REGISTRY: dict[tuple[str, str], Spec] = {}
FORBIDDEN: dict[str, dict[str, frozenset[str]]] = {}  # question -> solution grade_id -> names it must not use
WHY: dict[tuple[str, str], str] = {}  # (question, solution) -> what delegating means there


def verdict(question: str, test: str, uses: tuple[str, ...] = (), after: dict[str, str] | None = None,
            errors: dict[str, str] | None = None) -> Callable:
    """Register the decorated function as the verdict of `test` in `question`.

    `uses`: the solution cells whose delegation costs this test its points; `after`: earlier tests whose failure
    explains this one's (when both fail, the sentence is added to this test's message); `errors`: hints for the
    exceptions the test cell may stop with before its hidden checks run.
    """

    def register(fn: Callable[[Records], None]) -> Callable[[Records], None]:
        REGISTRY[(question, test)] = Spec(question, test, fn, uses, dict(after or {}), dict(errors or {}))
        return fn

    return register


def forbid(question: str, solution: str, names: frozenset[str] = TORCH_NORMS, why: str = TORCH_WHY) -> None:
    """The solution cell `solution` of `question` must not refer to `names` (it must do the math itself)."""
    FORBIDDEN.setdefault(question, {})[solution] = names
    WHY[(question, solution)] = why


def load(question: str) -> None:
    """Import the verdicts of one question (course_judge.q3 for Q3)."""
    importlib.import_module(f"course_judge.{question.lower()}")


def question_of(notebook: str) -> str:
    """`Q3_batchnorm` (or a path to it) -> `Q3`."""
    match = re.search(r"(Q\d+)", str(notebook).rsplit("/", 1)[-1])
    if not match:
        raise ValueError(f"not a course notebook: {notebook}")
    return match[1]


def _first_error(outputs: list) -> str:
    """The first error output's `ename: evalue`, one line of at most 300 characters (cut before it is joined: a
    kernel's error output can carry megabytes, and its fields need not be strings)."""
    for out in outputs:
        if isinstance(out, dict) and out.get("output_type") == "error":
            ename, evalue = out.get("ename", "Error"), out.get("evalue", "")
            ename = cut(ename, MAX_NAME) if isinstance(ename, str) else "Error"
            evalue = cut(evalue, MAX_TEXT) if isinstance(evalue, str) else ""
            text = f"{ename}: {evalue}".strip().rstrip(":")
            return cut(text.splitlines()[0], 300) if text.strip() else "an error"
    return ""


def _why_missing(records: Records, outputs: list, earlier: str) -> str:
    error = _first_error(outputs)
    if records.problem != "missing":
        return f"This test's results are {records.problem}."
    if error.startswith(("NotRunError", "DeadKernelError")) or "CellTimeoutError" in error:
        return f"This test did not run: {error.split(': ', 1)[-1]}"
    if error:
        return f"The checks in this cell stopped before the hidden ones could run: {error}"
    if earlier:
        return f"This test did not record its results; earlier in the notebook {earlier}."
    return ("This test did not record its results: its hidden checks did not run (was the test cell changed, or "
            "did your code stop it?).")


def _guards(spec: Spec, records: Records) -> tuple[str, list[tuple[str, object]]] | None:
    """(the solution, [(call key, what the refusal saw)]) for a test whose points depend on doing the math oneself,
    else None. Every call of the student's layer there ran with torch's normalization (or course_lib's combiner)
    refused (course_recorder.guard) and recorded under `key#guard` what the refusal saw."""
    rules = [s for s in spec.uses if s in FORBIDDEN.get(spec.question, {})]
    if not rules:
        return None
    found = []
    for key in records.keys():
        if key.endswith(GUARD):
            try:
                found.append((key[:-len(GUARD)], records.get(key)))
            except Malformed:
                found.append((key[:-len(GUARD)], None))
    torch_rule = [s for s in rules if FORBIDDEN[spec.question][s] == TORCH_NORMS]
    return (torch_rule or rules)[0], found


def _refused(spec: Spec, test: str, guards: tuple[str, list] | None) -> Verdict | None:
    """A refusal (the code reached torch's normalization, by whatever route, even if it caught the error) costs the
    test its points, as delegating does."""
    if guards is None:
        return None
    solution, found = guards
    for _, seen in found:
        refused = seen.get("refused") if isinstance(seen, dict) else None
        if isinstance(refused, list) and refused:
            why = WHY.get((spec.question, solution), TORCH_WHY)
            return Verdict(test, False, f"Your {solution} called {quote(refused[0], 70)} while the test ran "
                                        f"it. {why}")
    return None


def _unproven(spec: Spec, test: str, guards: tuple[str, list] | None) -> Verdict | None:
    """Right values count only with the proof that the refusal was in place: no evidence, or a refusal switched off
    during a call, means the test cannot tell whose math produced them. (Kept for torch's rule: course_lib's
    refusal is plain Python, which a trace function enforces without such a proof.)"""
    if guards is None or FORBIDDEN[spec.question][guards[0]] != TORCH_NORMS:
        return None
    _, found = guards
    if not found:
        return Verdict(test, False, "This test's results carry no proof that torch's normalization was refused "
                                    "while your code ran, so they cannot count; ask your instructor.",
                       note=f"{test}: the records carry no evidence of the refusal (was the recorder changed?)")
    for key, seen in found:
        if not (isinstance(seen, dict) and seen.get("intact") is True):
            return Verdict(test, False, "torch's normalization was no longer refused after your code ran (something "
                                        "switched the grader's refusal off), so this test's values cannot count; "
                                        "ask your instructor.",
                           note=f"{test}: the refusal of torch's normalization was off after the call {key[:60]!r}")
    return None


def _named(err: Fail) -> str | None:
    """The catalogued mistake a failed check named: its own, or that of the failure it adds a sentence to (a verdict
    that catches a Fail and raises a new one whose message starts with the caught one's, e.g. q7's 'Also, ...')."""
    while err.mistake is None:
        inner = err.__context__
        if not (isinstance(inner, Fail) and str(err).startswith(str(inner))):
            return None
        err = inner
    return err.mistake


def judge_test(spec: Spec | None, test: str, outputs: list, found: Audit, earlier: str = "") -> Verdict:
    """One test cell's verdict from its outputs (the record bundle and any error) and the notebook's audit."""
    if spec is None:
        return Verdict(test, False, f"no judge for {test}", judge_error=f"no verdict function for {test}")
    if found.tampering:
        shown = "; ".join(str(f) for f in found.tampering[:3])
        return Verdict(test, False, f"This notebook's code changes how the grader runs it: {shown}. Its tests get "
                                    f"no points; if this is a mistake, ask your instructor.")
    for solution in spec.uses:
        if solution in found.delegation:
            return Verdict(test, False, f"Your solution {solution} {found.delegation[solution]}. "
                                        f"{WHY.get((spec.question, solution), TORCH_WHY)}")
    records = Records.from_outputs(test, outputs)
    if records.problem:
        message = _why_missing(records, outputs, earlier)
        error = _first_error(outputs).split(":", 1)[0]
        if error in spec.errors:
            message += f"\n{spec.errors[error]}"
        return Verdict(test, False, message)
    guards = _guards(spec, records)
    refused = _refused(spec, test, guards)
    if refused is not None:
        return refused
    stopped = records.aborted()
    try:
        spec.judge(records)
    except Missing as err:
        why = f" It stopped early: {stopped}." if stopped else ""
        return Verdict(test, False, f"This test did not record the result it needs ({err.key}).{why}")
    except TooLarge as err:
        return Verdict(test, False, f"This test's results are too large to judge: your code gave {err}. A correct "
                                    f"answer here is far smaller.")
    except Malformed as err:
        return Verdict(test, False, f"This test's results are malformed: {err}.")
    except Fail as err:
        return Verdict(test, False, str(err), mistake=_named(err))
    except Exception as err:  # noqa: BLE001 - a judge that cannot read the results is a grader problem
        return _could_not_check(test, err)
    if stopped:  # every check passed on what was recorded, but the probe did not finish
        return Verdict(test, False, f"This test stopped early: {stopped}.")
    return _unproven(spec, test, guards) or Verdict(test, True)


def _could_not_check(test: str, err: BaseException) -> Verdict:
    """A failed test for a verdict function (or the judge around it) that raised: the instructor is told what."""
    try:
        text = str(err)
    except Exception:  # noqa: BLE001 - an exception whose text cannot be made (a huge int in it) is named alone
        text = ""
    detail = f"{type(err).__name__}: {text[:500]}".rstrip(": ")
    return Verdict(test, False, "The grader could not check this test's results; your instructor has been told.",
                   judge_error=detail)


def _audit(nb, release, forbidden: dict[str, frozenset[str]]) -> tuple[Audit, list[str]]:
    """The audit's findings, and what to hold the notebook for when the audit itself failed: code it cannot read
    is for the instructor to judge (its scores stand, as the values earned them), never the grader's failure."""
    try:
        return audit(nb, release, forbidden), []
    except Exception as err:  # noqa: BLE001 - RecursionError, MemoryError: the student's code, not a grader fault
        return Audit(), [f"the audit could not read this notebook's code ({type(err).__name__}): it is held for "
                         f"review so that an instructor reads it"]


def is_test(cell) -> bool:
    """A graded test cell (autograded: grade set, not a solution)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def judge_notebook(nb, release, notebook: str) -> NotebookVerdicts:
    """The verdict of every test cell of a graded notebook (`release` is the student's version of it)."""
    question = question_of(notebook)
    load(question)
    found, unread = _audit(nb, release, FORBIDDEN.get(question, {}))
    secrets = secret_lines(nb, release)
    result = NotebookVerdicts()
    if found.tampering:
        result.notes.append(clip("tampering: " + "; ".join(str(f) for f in found.tampering[:5])))
    for solution, finding in found.delegation.items():
        result.notes.append(clip(f"delegation: {solution} {finding}"))
    result.review = [bounded(str(f), secrets) for f in found.review] + unread
    earlier = ""
    for cell in nb.cells:
        if not is_test(cell):
            error = _first_error(cell.get("outputs", [])) if cell.get("cell_type") == "code" else ""
            if error and not earlier:
                earlier = f"a cell raised {error}"
            continue
        test = cell.metadata["nbgrader"]["grade_id"]
        spec = REGISTRY.get((question, test))
        try:
            v = judge_test(spec, test, cell.get("outputs", []), found, earlier)
        except Exception as err:  # noqa: BLE001 - whatever a student produced ends as this test's failure
            v = _could_not_check(test, err)
        for before, why in (spec.after if spec else {}).items():
            if not v.passed and before in result.verdicts and not result.verdicts[before].passed and why not in v.message:
                v.message += f"\n{why}"
        # Cut before scrubbing: the message quotes the student's text, and scrub's work grows with its length.
        v.message = bounded(v.message, secrets)
        if v.judge_error:
            result.notes.append(clip(f"the judge failed on {test}: {v.judge_error}"))
        if v.note:
            result.notes.append(f"tampering: {bounded(v.note, secrets)}")
        result.verdicts[test] = v
    return result


__all__ = ["Spec", "Verdict", "NotebookVerdicts", "REGISTRY", "verdict", "forbid", "judge_notebook", "judge_test",
           "is_test", "question_of", "Fail", "Records", "WITHHELD"]

"""The two nbgrader preprocessors that put the judge between the kernel and the scores, and the student's feedback.

JudgeVerdicts runs in autograde right after the notebook has executed and before SaveAutoGrades scores it:
each test cell's outputs (whatever the kernel put there) are replaced by the judge's verdict, nothing on a
pass and an error carrying the judge's message on a fail, so nbgrader's own scoring counts exactly the
judge's decisions. A failed test's record bundle is kept after the verdict, for the instructor.

StudentCopy runs first in generate_feedback: the student's copy of a graded notebook shows each test cell
as the release has it (its visible part) with its verdict, and every other cell as the student wrote it
without the outputs of the grading run (student code ran there next to the hidden tests and could have
printed them); an error a cell raised during grading is kept as one line. Nothing of the hidden tests, the
judge or the probes can reach the feedback: every remaining text is scrubbed of their lines as well.

Each test's verdict is also data, in the graded notebook's metadata (VERDICTS_KEY): its grade_id, passed, points,
the named mistake's id in course_lib.mistakes (or null) and the message. The class report reads that, never the message, which
quotes the student's own exception text (a student could write the sentence that names a mistake). The key is the
judge's: whatever a submission carries under it is replaced, and it travels inside the autograded notebook (locally
and from a Dask worker) with nothing else to copy.

A notebook whose code the audit could not judge by itself (course_judge's `review`) is held for the instructor's
review: JudgeVerdicts writes the findings into the report file as data (its "review" field) and into the graded
notebook's metadata (REVIEW_KEY), and StudentCopy turns them into a neutral note at the top of the feedback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

from course_grader import inert
from course_judge import Verdict, is_test, judge_notebook
from course_recorder import MIME
from course_judge.secrets import scrub, secret_lines

VERDICT_ERROR = "TestFailed"
# The graded notebook's metadata key for the judge's verdicts as data (a list, in notebook order), read by the class
# report (class_report.VERDICTS_KEY, copied there: that module never imports torch).
VERDICTS_KEY = "course_verdicts"
# The graded notebook's metadata key for what the audit is unsure of (a list of findings), read by StudentCopy.
REVIEW_KEY = "course_review"
# A failed test's record bundle is kept for the instructor up to this size (an honest one is under 300 kB; a forged one
# may be as large as the executor's record cap): a larger one is replaced by a line saying so.
KEPT_RECORD_BYTES = 1 << 20
# The feedback shows a student's cell source up to this many characters (scrubbing costs about 1 s per 4 MB).
SHOWN_SOURCE = 100_000
REVIEW_NOTE = ("The grader found code in this notebook that it does not judge by itself: {found}. Your instructor "
               "will look at it; your scores below stand unless they decide otherwise.")


def _release(folder: str, resources: dict) -> tuple[str, nbformat.NotebookNode]:
    name = Path((resources or {}).get("unique_key", "")).name
    return name, nbformat.read(Path(folder) / f"{name}.ipynb", as_version=4)


def verdict_outputs(passed: bool, message: str) -> list:
    """What a judged test cell shows: a line on a pass, an error output (which nbgrader scores 0) on a fail."""
    if passed:
        return [nbformat.v4.new_output("stream", name="stdout", text="Passed.\n")]
    lines = message.splitlines() or ["failed"]
    return [nbformat.v4.new_output("error", ename=VERDICT_ERROR, evalue=message,
                                   traceback=[f"{VERDICT_ERROR}: {lines[0]}", *lines[1:]])]


def verdict_data(grade_id: str, verdict: Verdict, max_points: object) -> dict:
    """One test's verdict as data: the points nbgrader will give it (all on a pass, none on a fail) and the named
    mistake as the judge decided it (Verdict.mistake), never read back from the message."""
    try:
        top = float(max_points)
    except (TypeError, ValueError):
        top = None
    return {"grade_id": grade_id, "passed": bool(verdict.passed),
            "points": (top if verdict.passed else 0.0) if top is not None else None, "max_points": top,
            "mistake": verdict.mistake if not verdict.passed else None, "message": verdict.message}


def _kept(output: dict) -> dict:
    """A failed test's record bundle as the autograded copy keeps it: whole, or a line when it is too large."""
    size = len(json.dumps(output["data"][MIME], default=str))
    if size <= KEPT_RECORD_BYTES:
        return output
    return nbformat.v4.new_output("stream", name="stdout", text=f"(the test's records, {size} bytes, are over the "
                                  f"{KEPT_RECORD_BYTES} bytes kept: not kept)\n")


def _shown(source: str) -> str:
    """A student's cell source cut to SHOWN_SOURCE characters, before it is scrubbed."""
    source = str(source)
    if len(source) <= SHOWN_SOURCE:
        return source
    return source[:SHOWN_SOURCE] + f"\n# ... (truncated: {len(source) - SHOWN_SOURCE} more characters)"


class JudgeVerdicts(NbGraderPreprocessor):
    """Replace every test cell's outputs by the judge's verdict (course_judge), before scoring."""

    release_dir = Unicode("", help="the release assignment folder (the student's version of each notebook)").tag(config=True)
    report_file = Unicode("", help="JSON lines: the judge's notes for the instructor").tag(config=True)

    def preprocess(self, nb, resources):
        name, release = _release(self.release_dir, resources)
        started = time.monotonic()
        judged = judge_notebook(nb, release, name)
        seconds = time.monotonic() - started
        data = []
        for cell in nb.cells:
            if not is_test(cell):
                continue
            grade_id = cell.metadata.nbgrader["grade_id"]
            verdict = judged.verdicts[grade_id]
            # The records of a failed test stay, as evidence for the instructor (a passed one needs none).
            records = [_kept(o) for o in cell.outputs if MIME in o.get("data", {})][:1] if not verdict.passed else []
            cell.outputs = verdict_outputs(verdict.passed, verdict.message) + records
            data.append(verdict_data(grade_id, verdict, cell.metadata.nbgrader.get("points")))
        # A submission may carry either key itself: only the judge's verdicts and findings are kept under them.
        nb.metadata[VERDICTS_KEY] = data
        nb.metadata.pop(REVIEW_KEY, None)
        if judged.review:
            nb.metadata[REVIEW_KEY] = list(judged.review)
        if self.report_file:
            with open(self.report_file, "a") as f:
                f.write(json.dumps({"notebook": name, "judge": judged.notes, "review": judged.review,
                                    "phases": {"judge": round(seconds, 3)}}) + "\n")
        return nb, resources


def review_note(findings: list[str], secrets: frozenset[str]) -> nbformat.NotebookNode:
    """The markdown cell that tells the student what was found, without accusing; the quotes render as plain text."""
    found = "; ".join(inert.markdown(scrub(str(f), secrets)) for f in findings[:5])
    return nbformat.v4.new_markdown_cell(REVIEW_NOTE.format(found=found))


def _error_note(outputs: list, secrets: frozenset[str]) -> list:
    """One line for the first error a cell raised during grading (scrubbed), or nothing."""
    for out in outputs:
        if out.get("output_type") == "error":
            ename = "".join(ch for ch in str(out.get("ename", "Error")) if ch.isalnum() or ch in "_.")[:60] or "Error"
            evalue = " ".join(str(out.get("evalue", "")).split())[:200]
            text = scrub(f"During grading this cell raised {ename}: {evalue}".rstrip(": "), secrets)
            return [nbformat.v4.new_output("stream", name="stdout", text=text + "\n")]
    return []


class StudentCopy(NbGraderPreprocessor):
    """The feedback version of a graded notebook: visible tests with verdicts, no grading-run outputs, scrubbed."""

    release_dir = Unicode("", help="the release assignment folder").tag(config=True)

    def preprocess(self, nb, resources):
        name, release = _release(self.release_dir, resources)
        secrets = secret_lines(nb, release)
        visible = {c.metadata["nbgrader"]["grade_id"]: c.source for c in release.cells
                   if c.metadata.get("nbgrader", {}).get("grade_id")}
        findings = nb.metadata.pop(REVIEW_KEY, None)
        for cell in nb.cells:
            if cell.cell_type != "code":
                cell.source = scrub(_shown(cell.source), secrets)
                continue
            if is_test(cell):
                cell.source = visible.get(cell.metadata.nbgrader["grade_id"], "")
                kept = [o for o in cell.outputs if o.get("output_type") in ("stream", "error")][:1]
                for out in kept:
                    if out.get("output_type") == "error":
                        out["evalue"] = scrub(str(out.get("evalue", "")), secrets)
                        out["traceback"] = [scrub(str(line), secrets) for line in out.get("traceback", [])]
                cell.outputs = kept
            else:
                cell.outputs = _error_note(cell.outputs, secrets)
                cell.source = scrub(_shown(cell.source), secrets)
            cell.execution_count = None
        if isinstance(findings, list) and findings:
            nb.cells.insert(0, review_note(findings, secrets))
        return nb, resources

"""What a submission brings with it is bounded before the grader holds it whole (issue 18, item 4).

- A submitted notebook file over the cap (`--max-submission-bytes`) is not read: its source would otherwise reach the
  autograded notebook, the audit and the feedback whole. It is not graded and the note says why and what to do;
  a notebook under the cap is repaired and graded as before.
- A failed test's record bundle is kept in the instructor's autograded copy only up to KEPT_RECORD_BYTES (a forged
  bundle may be as large as the executor's record cap); a larger one becomes a line saying so.
- The feedback shows each student cell's source cut to SHOWN_SOURCE characters, cut before it is scrubbed.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from course_grader import judging
from course_grader.repair import repair
from course_recorder import MIME

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "release" / "normalization"
Q1 = "Q1_bn_learns_and_measures"


def _padded(tmp_path: Path, megabytes: int) -> Path:
    """The release Q1 with a cell of `megabytes` MiB of output, as a student might save it."""
    nb = nbformat.read(RELEASE / f"{Q1}.ipynb", as_version=4)
    cell = nbformat.v4.new_code_cell("print('x' * 10)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * (megabytes << 20))]
    nb.cells.append(cell)
    path = tmp_path / "submitted" / f"{Q1}.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_a_notebook_over_the_cap_is_not_read_and_the_student_is_told(tmp_path):
    path = _padded(tmp_path, 3)
    out = tmp_path / "inbox" / path.name
    out.parent.mkdir()
    notes = repair(path, RELEASE / path.name, out, max_bytes=2 << 20)
    assert not out.exists()
    assert len(notes) == 1 and "over the 2 MiB a submission may be: not graded" in notes[0], notes
    assert "clear its outputs" in notes[0]


def test_a_notebook_under_the_cap_is_repaired_as_before(tmp_path):
    path = _padded(tmp_path, 1)
    out = tmp_path / "inbox" / path.name
    out.parent.mkdir()
    assert repair(path, RELEASE / path.name, out, max_bytes=2 << 20) == []
    assert out.exists()


def _bundle(size: int) -> dict:
    return nbformat.v4.new_output("display_data", data={MIME: {"pad": "y" * size}})


def test_a_failed_tests_records_are_kept_up_to_the_cap():
    small = _bundle(1000)
    assert judging._kept(small) is small
    big = judging._kept(_bundle(judging.KEPT_RECORD_BYTES + 1))
    assert MIME not in big.get("data", {})
    assert "not kept" in big["text"] and len(big["text"]) < 200


def test_the_feedback_cuts_a_huge_source_before_it_is_scrubbed(monkeypatch):
    seen = []
    monkeypatch.setattr(judging, "scrub", lambda text, secrets: seen.append(len(text)) or text)
    nb = nbformat.read(RELEASE / f"{Q1}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("x = 1\n" * 1_000_000))
    nb.cells.append(nbformat.v4.new_markdown_cell("words " * 1_000_000))
    out, _ = judging.StudentCopy(release_dir=str(RELEASE)).preprocess(nb, {"unique_key": Q1})
    assert max(seen) <= judging.SHOWN_SOURCE + 100
    code, markdown = out.cells[-2], out.cells[-1]
    assert code.source.startswith("x = 1\n") and "truncated: " in code.source
    assert markdown.source.startswith("words ") and "truncated: " in markdown.source

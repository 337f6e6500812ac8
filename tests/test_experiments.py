"""Demo and experiment cells are not run when grading, by default (settings.SKIP_TAGS): no test depends on them.

The release decides which cells those are, never the submission's tags; a cell the student edited runs as written;
the autograded copy shows the outputs the student submitted for a cell that was not run, under the output caps,
without record bundles, and said to be the submitted ones. Scores are those of a run of every cell.
"""

from __future__ import annotations

import base64
import shutil

import nbformat

from course_grader import settings
from course_grader.kernel import KEPT_NOTE, RECORD_MIME, RERUN_NOTE
from course_grader.pipeline import Options, run
from demo_class import LIMITS, scores_of
from submissions import notebook_name

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(64)).decode()


def _cells(nb, tag: str) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and tag in c.metadata.get("tags", [])]


def test_experiments_are_not_run_and_keep_the_submitted_outputs(course, tmp_path):
    name = notebook_name(course, "Q2")
    reference = course / "submitted" / "reference" / "normalization" / f"{name}.ipynb"
    nb = nbformat.read(reference, as_version=4)
    experiment, demo_cell = _cells(nb, "experiment")[0], _cells(nb, "demo")[0]
    nb.cells[experiment].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="the spread shrinks as the batch grows\n"),
        nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>",
                                                     RECORD_MIME: {"forged": True}}),
        nbformat.v4.new_output("stream", name="stdout", text="x" * (settings.MAX_CELL_OUTPUT_BYTES + 10)),
    ]
    nb.cells[demo_cell].source += "\nprint('the student edited this demo cell')"
    nb.cells[demo_cell].outputs = [nbformat.v4.new_output("stream", name="stdout", text="stale submitted output\n")]
    test = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade")
                and not c.metadata.nbgrader.get("solution"))
    nb.cells[test].metadata["tags"] = ["experiment"]  # a test the student tags an experiment still runs
    folder = tmp_path / "class" / "eve" / "normalization"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{name}.ipynb")
    shutil.copytree(folder, tmp_path / "class" / "ref" / "normalization")
    shutil.copy(reference, tmp_path / "class" / "ref" / "normalization")
    common = dict(root=course, class_dir=tmp_path / "class", jobs=2, notebooks=["Q2"], feedback=False, report=False,
                  **LIMITS)
    skipped = run(Options(csv=tmp_path / "skipped.csv", **common))
    assert scores_of(skipped, "eve") == scores_of(skipped, "ref")
    assert all(points > 0 for points in scores_of(skipped, "eve")[name].values())

    graded = nbformat.read(course / "autograded" / "eve" / "normalization" / f"{name}.ipynb", as_version=4)
    kept = graded.cells[experiment].outputs
    assert kept[0].text == KEPT_NOTE and kept[1].text.startswith("the spread shrinks")
    assert set(kept[2].data) == {"image/png", "text/plain"}, "a record bundle was kept from the submission"
    assert kept[-1].output_type == "error" and "truncated" in kept[-1].evalue
    assert sum(len(str(o)) for o in kept) < settings.MAX_CELL_OUTPUT_BYTES + 10_000
    assert graded.cells[experiment].execution_count is None
    ran = graded.cells[demo_cell]
    assert ran.execution_count and "the student edited this demo cell" in str(ran.outputs)
    assert "stale" not in str(ran.outputs)
    ref = nbformat.read(course / "autograded" / "ref" / "normalization" / f"{name}.ipynb", as_version=4)
    assert ref.cells[experiment].outputs == [] and ref.cells[experiment].execution_count is None

    everything = run(Options(csv=tmp_path / "all.csv", run_experiments=True, students=["ref"], **common))
    assert scores_of(everything, "ref") == scores_of(skipped, "ref")
    ref = nbformat.read(course / "autograded" / "ref" / "normalization" / f"{name}.ipynb", as_version=4)
    assert ref.cells[experiment].execution_count and ref.cells[demo_cell].execution_count


def test_a_name_only_a_cell_not_run_defines_gets_the_notebook_run_again_with_every_cell(course, tmp_path):
    """A solution that reads a global which only exists once a demo cell has run (here through a cell of the student's
    own after it) loses nothing: the NameError the skipped cell causes makes the notebook run again, every cell."""
    name = notebook_name(course, "Q2")
    reference = course / "submitted" / "reference" / "normalization" / f"{name}.ipynb"
    nb = nbformat.read(reference, as_version=4)
    demo_cell = _cells(nb, "demo")[0]
    solution = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution"))
    nb.cells[solution].source += ("\n\n_spread = spread_across_batches\n\n\n"
                                  "def spread_across_batches(example, mate_batches, eps=1e-5):\n"
                                  "    assert SHAPE == (2, 3, 3)\n"
                                  "    return _spread(example, mate_batches, eps)\n")
    nb.cells.insert(demo_cell + 1, nbformat.v4.new_code_cell("SHAPE = tuple(example.shape)  # the demo's example"))
    folder = tmp_path / "class" / "eve" / "normalization"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{name}.ipynb")
    outcome = run(Options(root=course, class_dir=tmp_path / "class", jobs=1, notebooks=["Q2"], feedback=False,
                          report=False, csv=tmp_path / "eve.csv", **LIMITS))
    reference_points = nbformat.read(course / "source" / "normalization" / f"{name}.ipynb", as_version=4)
    full = {c.metadata.nbgrader["grade_id"]: float(c.metadata.nbgrader["points"]) for c in reference_points.cells
            if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata.nbgrader.get("solution")}
    assert scores_of(outcome, "eve")[name] == full
    assert any(RERUN_NOTE in note for note in outcome.results["eve"].notes), outcome.results["eve"].notes

"""The judge reads whatever a student produced and always ends with a verdict (issue 18, items 3 and 4).

A student controls the code the audit reads and, through the kernel, every record bundle the judge parses: a
display output of the record MIME type can carry anything JSON can. Whatever it is, `judge_notebook` returns a
verdict for every test (it never raises, which made the grader call the notebook "not graded" and grade it four
times), never passes a test on records that are not a probe's, and says what it could not read:

- a cell whose syntax tree is too deep for the audit (Python can still run it) is held for the instructor's review,
  with the scores as the values earned them; the rest of the cell is still read;
- a forged or malformed bundle (wrong types everywhere, missing keys, NaN and infinities, huge integers, deep
  nesting, a forged `__aborted__`) fails its test with a message (hypothesis fuzzes the parser and every
  question's verdict functions, on bundles derived from honest ones);
- sizes are bounded: a probe records a summary instead of a value over the recorder's caps, and the judge fails
  that test saying so; every message the judge writes is cut to MAX_MESSAGE characters before it is scrubbed.

The notebooks here are the source notebooks executed in-process by the mutation harness (the reference solutions,
whose records are honest), changed by hand.
"""

from __future__ import annotations

import ast
import base64
import copy
import functools
import json
import os
from pathlib import Path
from unittest import mock

import nbformat
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import course_judge
from course_judge import NotebookVerdicts, is_test, judge_notebook
from course_judge.audit import MAX_AST_DEPTH, TORCH_NORMS, audit, depth
from course_judge.records import MAX_TEXT as JUDGE_MAX_TEXT
from course_judge.secrets import MAX_MESSAGE, TRUNCATED, WITHHELD, bounded, secret_lines
from course_mutation.harness import RunResult, _execute, notebook_path
from course_recorder import ABORTED, MIME, Recorder, wire
from course_recorder.probes import module_facts
from submissions import add_cell, cell_index

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "release" / "normalization"
Q3 = "Q3_batchnorm"
NOTEBOOKS = sorted(p.stem for p in (ROOT / "source" / "normalization").glob("Q*.ipynb"))
LONGEST = MAX_MESSAGE + len(TRUNCATED) + 1  # a message cut to its cap, with the cap's notice


@functools.cache
def _executed(name: str) -> nbformat.NotebookNode:
    """The source notebook `name` run in-process with the reference solutions (honest record bundles)."""
    os.environ.setdefault("COURSE_GRADING_MODE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    with mock.patch.dict(os.environ, NBGRADER_EXECUTION="autograde"):
        return _execute(notebook_path(name), {}, None, False, RunResult())


@functools.cache
def _release(name: str) -> nbformat.NotebookNode:
    return nbformat.read(RELEASE / f"{name}.ipynb", as_version=4)


def _judged(nb: nbformat.NotebookNode, name: str) -> NotebookVerdicts:
    """judge_notebook on a copy of `nb`; whatever it raises fails the test that called it."""
    return judge_notebook(copy.deepcopy(nb), _release(name), name)


def _test_cells(nb: nbformat.NotebookNode) -> list:
    return [cell for cell in nb.cells if is_test(cell)]


def _bounded(judged: NotebookVerdicts) -> None:
    """Every message the judge wrote is within its cap (the cap's own notice included)."""
    for verdict in judged.verdicts.values():
        assert len(verdict.message) <= LONGEST, len(verdict.message)
    for text in [*judged.notes, *judged.review]:
        assert len(text) <= LONGEST, len(text)


def test_the_honest_notebooks_pass():
    """The base of every attack below: with the reference solutions every test passes and nothing is found."""
    for name in (Q3, "Q1_bn_learns_and_measures"):
        judged = _judged(_executed(name), name)
        assert judged.verdicts and all(v.passed for v in judged.verdicts.values()), {
            t: v.message for t, v in judged.verdicts.items() if not v.passed}
        assert not judged.review and not judged.notes


# ---- the audit: syntax trees too deep to read ----

def _with_cell(nb: nbformat.NotebookNode, code: str) -> nbformat.NotebookNode:
    """`nb` with a student cell of `code` after the layer's solution cell."""
    nb = copy.deepcopy(nb)
    add_cell(nb, code, after="batchnorm")
    return nb


SUM = "x = " + " + ".join(["1"] * 600)
DEEP = {  # Python runs each of these (a cell's compiler and the audit's visitors recurse differently)
    "a sum of 600 terms": SUM,
    "a sum of 100,000 terms": "x = " + "+".join(["1"] * 100_000),
    "600 nested lambdas": "f = " + "lambda: " * 600 + "1",
    "an attribute chain 600 long": "import torch\nx = torch" + ".a" * 600,
    "600 chained calls": "x = f" + "(1)" * 600,
    "a literal cell run by exec": f"exec({SUM!r})",
    "a sum just over the cap": "x = " + " + ".join(["1"] * (MAX_AST_DEPTH + 5)),
}
NOT_PYTHON = {  # Python's own parser refuses these: the cell cannot run, so there is nothing to read
    "5,000 nested parentheses": "x = " + "(" * 5000 + "1" + ")" * 5000,
    "5,000 nested lists": "x = " + "[" * 5000 + "]" * 5000,
    "600 nested calls": "x = " + "abs(" * 600 + "1" + ")" * 600,  # more than 200 open brackets: a SyntaxError
}


@pytest.mark.parametrize("code", DEEP.values(), ids=DEEP.keys())
def test_a_cell_too_deep_to_read_is_held_for_review(code):
    """Before: RecursionError out of the audit (the grader's failure: four runs, then "not graded")."""
    judged = _judged(_with_cell(_executed(Q3), code), Q3)
    assert all(v.passed for v in judged.verdicts.values()), "the scores stand: the values earned them"
    assert judged.review and any("too deeply" in f for f in judged.review), judged.review
    _bounded(judged)


@pytest.mark.parametrize("code", NOT_PYTHON.values(), ids=NOT_PYTHON.keys())
def test_a_cell_python_cannot_parse_is_not_held(code):
    judged = _judged(_with_cell(_executed(Q3), code), Q3)
    assert all(v.passed for v in judged.verdicts.values()) and not judged.review, judged.review


def test_tampering_beside_a_deep_expression_is_still_found():
    """The audit reads every statement it can: the deep one is held, the tampering next to it zeroes the tests."""
    code = "import sys\nsys.modules['torch'] = None\n" + SUM
    judged = _judged(_with_cell(_executed(Q3), code), Q3)
    assert not any(v.passed for v in judged.verdicts.values())
    assert any("tampering" in n and "sys.modules" in n for n in judged.notes), judged.notes
    assert any("too deeply" in f for f in judged.review), judged.review


def test_an_audit_that_fails_holds_the_notebook():
    """Whatever the audit cannot read (here: it raises) holds the notebook for review instead of raising."""
    with mock.patch.object(course_judge, "audit", side_effect=RecursionError("deep")):
        judged = _judged(_executed(Q3), Q3)
    assert judged.review and "could not read" in judged.review[0], judged.review
    assert all(v.passed for v in judged.verdicts.values())


def test_a_long_finding_is_cut():
    name = "a" * 5_000_000
    judged = _judged(_with_cell(_executed(Q3), f"import sys\nsys.modules.{name}.append(1)\n"
                                             f"%load_ext {name}"), Q3)
    assert judged.review and judged.notes
    _bounded(judged)


# ---- forged and malformed bundles ----

def _replace_records(nb: nbformat.NotebookNode, test: str, change) -> nbformat.NotebookNode:
    """`nb` with the bundle of `test` changed by `change(bundle)` (in place, or returning a new bundle)."""
    nb = copy.deepcopy(nb)
    cell = nb.cells[cell_index(nb, test)]
    for out in cell.outputs:
        if MIME in out.get("data", {}):
            new = change(out["data"][MIME])
            if new is not None:
                out["data"][MIME] = new
    return nb


BIG = 2_000_000
FORGED_ABORTS = {
    "a string": "stopped",
    "a number": 12,
    "wrong types": {"t": "raised", "type": 123, "bases": None, "message": {"a": 1}},
    "missing keys": {"t": "raised"},
    "a huge tensor shape": {"t": "tensor", "dtype": "torch.float32", "shape": [10 ** 30, 0], "data": ""},
    "an impossible dtype": {"t": "tensor", "dtype": 7, "shape": "x", "data": None},
    "deep nesting": json.loads("[" * 200 + "]" * 200),
    "deep dicts": functools.reduce(lambda inner, _: {"t": "dict", "items": {"k": inner}}, range(200), 1),
    "huge texts": {"t": "raised", "type": "E" * BIG, "bases": ["B" * BIG] * 3, "message": "M" * BIG},
    "many bases": {"t": "raised", "type": "E", "bases": ["B"] * BIG, "message": ""},
    "a huge integer": 10 ** 5000,  # str() refuses it (Python's limit on integer digits)
    "NaN": float("nan"),
    "an unknown kind": {"t": "surprise"},
    "a float repr": {"t": "float", "repr": "1e999999"},
}


@pytest.mark.parametrize("forged", FORGED_ABORTS.values(), ids=FORGED_ABORTS.keys())
def test_a_forged_aborted_record_fails_the_test(forged):
    """Before: Malformed (or TypeError) out of judge_notebook from Records.aborted()."""
    test = "test_train_mode_output"

    def forge(bundle):
        bundle["records"][ABORTED] = forged

    judged = _judged(_replace_records(_executed(Q3), test, forge), Q3)
    assert not judged.verdicts[test].passed, judged.verdicts[test]
    _bounded(judged)


def test_a_huge_exception_is_quoted_cut_and_scrubbed_short():
    """A 2,000,000-character exception type name and message (in the records and in the cell's error output):
    the verdict quotes at most the caps, and scrub never sees more than MAX_MESSAGE characters.

    Before: a 2,000,112-character verdict message, scrubbed whole three times per failed test."""
    raised = {"t": "raised", "type": "E" * BIG, "bases": ["E" * BIG, "Exception"], "message": "M" * BIG}

    def forge(bundle):
        bundle["records"] = {"fresh": raised, "fresh#in": [], ABORTED: raised}

    nb = _replace_records(_executed(Q3), "test_train_mode_output", forge)
    cell = nb.cells[cell_index(nb, "test_eval_mode_output")]
    cell.outputs = [nbformat.v4.new_output("error", ename="E" * BIG, evalue="M" * BIG, traceback=[])]
    seen: list[int] = []
    real = course_judge.secrets.scrub

    def scrub(text, secrets):
        seen.append(len(text))
        return real(text, secrets)

    with mock.patch.object(course_judge.secrets, "scrub", scrub):
        judged = _judged(nb, Q3)
    assert seen and max(seen) <= LONGEST, max(seen)
    for test in ("test_train_mode_output", "test_eval_mode_output"):
        verdict = judged.verdicts[test]
        assert not verdict.passed and "E" * JUDGE_MAX_TEXT not in verdict.message, verdict.message[:200]
        assert TRUNCATED in verdict.message, verdict.message  # the student is told their text was cut
    _bounded(judged)


def test_a_cut_message_does_not_leak_the_start_of_a_hidden_line():
    """Cutting a message can split a quoted hidden line; the part before the cut is withheld like the whole."""
    source = nbformat.read(ROOT / "source" / "normalization" / f"{Q3}.ipynb", as_version=4)
    secrets = secret_lines(source, _release(Q3))
    hidden = max((line for line in secrets if "q3." in line), key=len)
    padding = "x" * (MAX_MESSAGE - len(hidden) // 2)
    text = bounded(f"{padding}{hidden} and more", secrets)
    assert hidden[:len(hidden) // 2 - 2] not in text and WITHHELD in text and TRUNCATED in text, text


# ---- sizes: what a probe records ----

def test_a_huge_attribute_is_recorded_as_too_large():
    """A layer whose eps is a 4,000,000-element tensor: the probe records a summary, not 32 MB of floats.

    Before: module_facts recorded it whole (a worker went from 950 to 1,898 MiB)."""
    layer = torch.nn.Module()
    layer.eps = torch.zeros(4_000_000)
    layer.mults = list(range(4_000_000))
    rec = Recorder("test_parameters_and_buffers")
    rec.put("facts", module_facts(layer))
    size = len(json.dumps(rec.records))
    assert size < 10_000, size
    items = rec.records["facts"]["items"]["attributes"]["items"]
    assert items["eps"]["t"] == wire.TOO_LARGE and items["eps"]["size"] == 4_000_000, items["eps"]
    assert items["mults"]["t"] == wire.TOO_LARGE, items["mults"]


def test_a_huge_exception_type_is_recorded_short():
    huge = type("E" * BIG, (ValueError,), {})
    encoded = wire.encode(wire.Raised(huge("M" * BIG)))
    assert len(json.dumps(encoded)) < 4 * wire.MAX_TEXT + 64 * wire.MAX_NAME, len(json.dumps(encoded))
    assert "ValueError" in encoded["bases"] and encoded["type"].endswith(wire.CUT) and encoded["message"].endswith(wire.CUT)


def test_the_largest_honest_records_fit_the_caps():
    """Every record the reference solutions' probes make is within the caps (measured: see wire.MAX_ELEMENTS)."""
    for name in NOTEBOOKS:
        for cell in _test_cells(_executed(name)):
            for out in cell.outputs:
                bundle = out.get("data", {}).get(MIME)
                if bundle is not None:
                    text = json.dumps(bundle)
                    assert wire.TOO_LARGE not in text, (name, cell.metadata.nbgrader.grade_id)
                    assert len(bundle["records"]) <= wire.MAX_ITEMS


def test_a_too_large_record_fails_its_test_saying_so():
    test = "test_train_mode_output"

    def forge(bundle):
        bundle["records"]["fresh"] = wire.encode(torch.zeros(wire.MAX_ELEMENTS + 1))

    judged = _judged(_replace_records(_executed(Q3), test, forge), Q3)
    verdict = judged.verdicts[test]
    assert not verdict.passed and "too large" in verdict.message, verdict.message


def test_a_forged_tensor_over_the_cap_fails_its_test():
    """The kernel can skip the recorder's cap: the judge applies it again, to the data it is sent."""
    test = "test_train_mode_output"
    big = wire.encode(torch.zeros(2, 3, 2, 2))
    big["shape"] = [wire.MAX_ELEMENTS + 1]
    big["data"] = base64.b64encode(bytes(8 * (wire.MAX_ELEMENTS + 1))).decode()  # what the recorder would not send

    def forge(bundle):
        bundle["records"]["fresh"] = big

    judged = _judged(_replace_records(_executed(Q3), test, forge), Q3)
    assert not judged.verdicts[test].passed and "too large" in judged.verdicts[test].message


# ---- fuzzing: any bundle, every question's verdict functions ----

KINDS = ["tensor", "raised", "list", "dict", "float", "object", wire.TOO_LARGE, "surprise"]
FIELDS = ["t", "dtype", "shape", "data", "items", "kind", "type", "bases", "message", "repr", "requires_grad",
          "grad_fn", "parameter", "intact", "refused", "size", "what"]
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10 ** 30, max_value=10 ** 40)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["torch.float64", "torch.float32", "torch.int64", "AAAAAAAAAAA=", "ValueError", -(2 ** 70)])
           | st.builds(pow, st.just(10), st.just(5000))  # built, not sampled: hypothesis cannot repr it
           | st.builds(str.__mul__, st.just("x"), st.just(100_000)))
FIELD_KEYS = st.sampled_from(FIELDS) | st.text(max_size=6)


def _forms(children):
    return (st.lists(children, max_size=4)
            | st.dictionaries(FIELD_KEYS, children, max_size=5)
            | st.builds(lambda kind, rest: {**rest, "t": kind}, st.sampled_from(KINDS),
                        st.dictionaries(FIELD_KEYS, children, max_size=6)))


VALUES = st.recursive(SCALARS, _forms, max_leaves=20)
FUZZ = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _one_test(name: str, index: int) -> tuple[nbformat.NotebookNode, str]:
    """The executed notebook `name` with only its index-th test cell (the judge then judges that test alone)."""
    nb = copy.deepcopy(_executed(name))
    tests = _test_cells(nb)
    keep = tests[index % len(tests)]
    nb.cells = [c for c in nb.cells if not is_test(c) or c is keep]
    return nb, keep.metadata.nbgrader.grade_id


def _records_of(nb: nbformat.NotebookNode, test: str) -> dict:
    cell = nb.cells[cell_index(nb, test)]
    return next(o["data"][MIME] for o in cell.outputs if MIME in o.get("data", {}))["records"]


@pytest.mark.parametrize("name", NOTEBOOKS)
@FUZZ
@given(data=st.data())
def test_fuzzed_records_never_raise_and_never_pass(name, data):
    """Every key of an honest bundle holds a fuzzed value: the test fails with a bounded message."""
    nb, test = _one_test(name, data.draw(st.integers(min_value=0, max_value=40)))
    keys = list(_records_of(nb, test))
    keys += data.draw(st.lists(st.sampled_from([ABORTED, f"{keys[0]}#guard"]), max_size=2))

    def forge(bundle):
        bundle["records"] = {key: data.draw(VALUES) for key in keys}

    judged = _judged(_replace_records(nb, test, forge), name)
    assert not judged.verdicts[test].passed, judged.verdicts[test]
    _bounded(judged)


@pytest.mark.parametrize("name", NOTEBOOKS)
@FUZZ
@given(data=st.data())
def test_one_fuzzed_record_never_raises(name, data):
    """One key of an honest bundle holds a fuzzed value, the rest are honest: the judge's own reading of that
    question goes as deep as the records let it, and still returns a bounded verdict."""
    nb, test = _one_test(name, data.draw(st.integers(min_value=0, max_value=40)))
    keys = sorted(_records_of(nb, test))
    key = data.draw(st.sampled_from(keys))
    value = data.draw(VALUES)

    def forge(bundle):
        bundle["records"][key] = value

    judged = _judged(_replace_records(nb, test, forge), name)
    _bounded(judged)


OUTPUTS = st.lists(st.dictionaries(st.sampled_from(["output_type", "data", "ename", "evalue", "text"]),
                                   VALUES | st.sampled_from(["display_data", "error", "execute_result"])
                                   | st.fixed_dictionaries({MIME: VALUES}), max_size=4), max_size=3)


@FUZZ
@given(data=st.data(), outputs=OUTPUTS)
def test_any_outputs_never_raise_and_never_pass(data, outputs):
    """A test cell's outputs of any shape: bundles that are not dicts, records that are not a dict, labels that are
    not strings, error outputs whose names are not strings."""
    nb, test = _one_test(Q3, data.draw(st.integers(min_value=0, max_value=40)))
    bundle = data.draw(st.fixed_dictionaries({
        "test": st.sampled_from([test, 3, None]),
        "records": VALUES | st.dictionaries(st.sampled_from(["fresh", "fresh#in", ABORTED]), VALUES)}))
    cell = nb.cells[cell_index(nb, test)]
    cell.outputs = [nbformat.from_dict(o) for o in outputs] + [
        nbformat.from_dict({"output_type": "display_data", "data": {MIME: bundle}, "metadata": {}})]
    judged = _judged(nb, Q3)
    assert not judged.verdicts[test].passed
    _bounded(judged)


def test_a_statement_just_under_the_depth_cap_is_read_from_a_deep_stack():
    """The cap leaves room: a statement MAX_AST_DEPTH - 5 levels deep (an attribute chain, which the readers walk
    twice over) is read in full, tampering found, even with 300 frames already on the stack (nbgrader's
    preprocessors call the judge from deep inside)."""
    code = "import sys\nsys.modules" + ".a" * (MAX_AST_DEPTH - 8) + ".append(1)\n"
    assert MAX_AST_DEPTH - 5 <= depth(ast.parse(code).body[1]) <= MAX_AST_DEPTH
    nb = _with_cell(_executed(Q3), code)

    def deep(frames: int):
        return deep(frames - 1) if frames else audit(nb, _release(Q3), {"batchnorm": TORCH_NORMS})

    found = deep(300)
    assert any("sys.modules" in f.what for f in found.tampering), (found.tampering, found.review)
    assert not any("too deeply" in f.what for f in found.review), found.review

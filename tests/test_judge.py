"""The judge on records it did not expect: missing, duplicated, foreign or malformed bundles fail the test with a
message; a wrong output no catalogued mistake explains is still read for what it shows; nothing the judge says
quotes the hidden tests."""

from __future__ import annotations

from pathlib import Path

import nbformat
import torch
import torch.nn.functional as F

import course_judge
from course_judge import REGISTRY, judge_test, load
from course_judge.audit import Audit
from course_judge.secrets import WITHHELD, scrub, secret_lines
from course_recorder import MIME, Recorder, encode, q3
from course_recorder.inputs import seeded_input

ROOT = Path(__file__).resolve().parent.parent
load("Q3")
SPEC = REGISTRY[("Q3", "test_train_mode_output")]


def _bundle(test: str, records: dict) -> dict:
    return {"output_type": "display_data", "data": {MIME: {"test": test, "version": 1, "records": records}},
            "metadata": {}}


def _verdict(outputs: list) -> course_judge.Verdict:
    return judge_test(SPEC, "test_train_mode_output", outputs, Audit())


def _recorded(out_fresh: torch.Tensor) -> dict:
    """The records of test_train_mode_output with `out_fresh` as the fresh layer's output and nothing else."""
    rec = Recorder("test_train_mode_output")
    rec.call("fresh", lambda x: out_fresh, seeded_input(*q3.FRESH_X[0], seed=q3.FRESH_X[1]))
    return rec.records


def test_a_missing_bundle_fails_with_the_reason():
    error = {"output_type": "error", "ename": "NotImplementedError", "evalue": "", "traceback": []}
    verdict = _verdict([error])
    assert not verdict.passed and "NotImplementedError" in verdict.message, verdict.message
    verdict = _verdict([])
    assert not verdict.passed and "did not record its results" in verdict.message, verdict.message


def test_a_duplicated_foreign_or_malformed_bundle_fails():
    records = {"fresh": 1.0}
    cases = {"duplicated": [_bundle("test_train_mode_output", records)] * 2,
             "labelled": [_bundle("test_eval_mode_output", records)],
             "malformed": [_bundle("test_train_mode_output", {"fresh": {"t": "tensor", "dtype": "torch.float64",
                                                                         "shape": [4], "data": "AAAA"}})]}
    for word, outputs in cases.items():
        verdict = _verdict(outputs)
        assert not verdict.passed and word in verdict.message, (word, verdict.message)


def test_a_bundle_that_stops_short_fails_on_what_it_lacks():
    x = seeded_input(*q3.FRESH_X[0], seed=q3.FRESH_X[1])
    right = F.batch_norm(x, None, None, training=True, eps=1e-5)
    verdict = _verdict([_bundle("test_train_mode_output", _recorded(right))])
    assert not verdict.passed and "did not record the result it needs" in verdict.message, verdict.message


def _message_for(out: torch.Tensor) -> str:
    verdict = _verdict([_bundle("test_train_mode_output", _recorded(out))])
    assert not verdict.passed
    return verdict.message


def test_an_uncatalogued_mistake_is_read_for_what_it_shows():
    x = seeded_input(*q3.FRESH_X[0], seed=q3.FRESH_X[1])
    over_batch_and_channels = (x - x.mean((0, 1), keepdim=True)) / (x.var((0, 1), keepdim=True, correction=0) + 1e-5).sqrt()
    assert "over batch and channels" in _message_for(over_batch_and_channels)
    right = F.batch_norm(x, None, None, training=True, eps=1e-5)
    assert "times as spread out" in _message_for(right * 0.8)
    shifted = right.clone()
    shifted[:, 1] += 0.5
    assert "mean" in _message_for(shifted) and "instead of 0" in _message_for(shifted)


def test_what_the_judge_says_never_quotes_the_hidden_tests():
    source = nbformat.read(ROOT / "source" / "normalization" / "Q3_batchnorm.ipynb", as_version=4)
    release = nbformat.read(ROOT / "release" / "normalization" / "Q3_batchnorm.ipynb", as_version=4)
    secrets = secret_lines(source, release)
    hidden = next(line for line in secrets if "q3." in line)
    judge_line = next(line for line in secrets if "expect_close(" in line)
    text = f"the student printed: {hidden}\nand {judge_line} too\nand their own words"
    scrubbed = scrub(text, secrets)
    assert hidden not in scrubbed and judge_line not in scrubbed and "their own words" in scrubbed
    assert WITHHELD in scrubbed


def test_records_round_trip_through_the_wire_format():
    from course_judge.records import decode

    t = torch.arange(6.0, dtype=torch.float32).reshape(2, 3).requires_grad_(True)
    back = decode(encode({"t": t, "n": 3, "raised": ValueError, "items": (1.5, "x")}))
    assert back["t"].dtype == torch.float32 and torch.equal(back["t"], t.detach()) and back["t"].recorded["requires_grad"]
    assert back["n"] == 3 and back["items"] == (1.5, "x")

"""Messages that never mislead: a hint is appended only when the evidence points to that mistake, and a visible
check that stops inside a test cell under autograde does not stop the hidden checks (so a mistake costs only the
tests that check it). Runs notebooks in-process through the mutation harness, as tests/test_mutation.py does."""

from __future__ import annotations

import ast
import re

import nbformat
import pytest

from course_mutation import find
from course_mutation.harness import SOURCE, run_notebook, variant_code

HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", re.S)
# The notebooks whose visible checks all stand aside under autograde (inside student_checks or a check_* call).
CONVERTED = ("Q1", "Q2", "Q3", "Q4", "Q5")


@pytest.mark.parametrize("notebook", CONVERTED)
def test_visible_checks_stand_aside_under_autograde(notebook):
    """Every statement of a test cell's visible part, besides imports, seeding and printing, runs inside `with
    student_checks():` or is a check_* call: a plain assert or a crash there would stop the hidden checks."""
    path = next(SOURCE.glob(f"{notebook}_*.ipynb"))
    outside = []
    for cell in nbformat.read(path, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        visible = HIDDEN.sub("", cell.source)
        for node in ast.parse(visible).body[1:]:  # after the docstring
            text = ast.get_source_segment(visible, node)
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.With)) or text.startswith(
                    ("torch.manual_seed(", "check_", "print(")):
                continue
            outside.append(f"{meta['grade_id']}: {text.splitlines()[0]}")
    assert not outside, outside


def _run(notebook: str, **variants: str):
    """The notebook with the named catalogue variants in place of their solution cells."""
    replace = {}
    for name in variants.values():
        replace.update(variant_code(notebook, find(notebook, name)))
    return run_notebook(notebook, replace=replace)


def test_a_dtype_mistake_costs_only_the_dtype_test():
    """channel_stats returning float64 for a float32 input used to crash the values test's visible part ("Double did
    not match Float") before its hidden checks ran; now only the test of the dtype fails, and says why."""
    result = _run("Q1", stats="float64_always")
    assert result.failed() == ["test_channel_stats_contract"], {g: result.tests[g].output for g in result.failed()}
    assert "dtype" in result.tests["test_channel_stats_contract"].output


def test_part_a_is_blamed_only_when_the_values_come_from_it():
    """A warmup_anneal built with a wrong combine_schedules is told to fix Part A; one written without it, wrong for
    its own reason, is told its own mistake and nothing about Part A."""
    built_on_it = _run("Q5", combine="crashes_at_one")
    message = built_on_it.tests["test_warmup_anneal_values"].output
    assert "fix Part A first" in message, message
    own_mistake = _run("Q5", combine="not_rescaled", warmup="cosine_segments_closed_form")
    assert not own_mistake.tests["test_combine_values"].passed
    for test in ("test_warmup_anneal_values", "test_recorded_lr", "test_scheduled_training"):
        message = own_mistake.tests[test].output
        assert message and "Part A" not in message, (test, message)
    assert "cosine" in own_mistake.tests["test_warmup_anneal_values"].output


def test_the_grad_mode_hint_needs_its_evidence():
    """'Read the mode from self.training' is added when a training-mode forward updates the buffers with gradients on
    and not under no_grad, not to every eval-mode forward that changes them."""
    updates_in_eval = _run("Q3", layer="eval_updates_buffers").tests["test_eval_leaves_buffers_alone"].output
    assert "changed the running statistics" in updates_in_eval and "self.training" not in updates_in_eval
    grad_mode = _run("Q3", layer="mode_from_grad_mode").tests["test_eval_leaves_buffers_alone"].output
    assert "self.training" in grad_mode, grad_mode

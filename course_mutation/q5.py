"""Q5 (schedulers): known mistakes and correct alternatives of combine_schedules and warmup_anneal."""

from course_mutation import Variant

NOTEBOOK = "Q5"

_C, _W = "combine_schedules", "warmup_anneal"
_RETURN = "return scheds[i]((pos - starts[i]) / pcts[i])"
_SUM = '''    if abs(sum(pcts) - 1.0) > 1e-6:
        raise ValueError(f"percentages must sum to 1, got {pcts} (sum {sum(pcts)})")
'''
_NEG = '''    if any(p < 0 for p in pcts):
        raise ValueError(f"percentages must not be negative, got {pcts}")
'''

_CRASHES_AT_ONE = '''
import torch

def combine_schedules(pcts, scheds):
    if len(pcts) != len(scheds) or min(pcts) < 0 or abs(sum(pcts) - 1) > 1e-6:
        raise ValueError(f"bad percentages {pcts}")
    edges = torch.cumsum(torch.tensor([0.0] + [float(p) for p in pcts], dtype=torch.float64), 0)
    def _inner(pos):
        idx = int((pos >= edges).nonzero().max())
        return scheds[idx]((pos - edges[idx].item()) / (edges[idx + 1] - edges[idx]).item())
    return _inner
'''

VARIANTS = [
    Variant("boundary_to_earlier_segment", _C, "a position on a boundary goes to the earlier segment",
            fails=("test_combine_values",), names="sched.boundary_to_earlier",
            edits=(("pos >= starts[i])", "(pos > starts[i] or i == 0))"),)),
    Variant("not_rescaled", _C, "the position within a segment is not divided by its length",
            fails=("test_combine_values",), names="sched.not_rescaled",
            edits=((_RETURN, "return scheds[i](pos - starts[i])"),)),
    Variant("not_shifted", _C, "the segment start is not subtracted",
            fails=("test_combine_values",), names="sched.not_shifted",
            edits=((_RETURN, "return scheds[i](pos / pcts[i])"),)),
    Variant("global_position", _C, "each schedule is given the overall position",
            fails=("test_combine_values",), names="sched.global_position",
            edits=((_RETURN, "return scheds[i](pos)"),)),
    Variant("schedules_reversed", _C, "the schedules are paired with the percentages in reverse order",
            fails=("test_combine_values",), names="sched.wrong_order",
            edits=(("    starts = [sum", "    scheds = list(scheds)[::-1]\n    starts = [sum"),)),
    Variant("crashes_at_one", _C, "pos = 1 indexes past the last segment (the lesson's torch version)",
            fails=("test_combine_values",), says="pos 1 belongs to the last segment",
            code=_CRASHES_AT_ONE),
    Variant("crashes_at_one_breaks_warmup", _C, "pos = 1 crashes, and so does warmup_anneal built on it",
            fails=("test_warmup_anneal_values",), says="Fix Part A first",
            code=_CRASHES_AT_ONE),
    Variant("no_sum_check", _C, "percentages that do not sum to 1 are accepted",
            fails=("test_combine_errors",), says="raised nothing",
            edits=((_SUM, ""),)),
    Variant("no_negative_check", _C, "negative percentages are accepted when the sum is 1",
            fails=("test_combine_errors",), says="negative percentage",
            edits=((_NEG, ""),)),
    Variant("exact_sum_comparison", _C, "the sum is compared with 1 exactly (sum(pcts) != 1)",
            fails=("test_combine_values",), says="within a tolerance",
            edits=(("abs(sum(pcts) - 1.0) > 1e-6", "sum(pcts) != 1"),)),
    Variant("assert_instead_of_valueerror", _C, "an assert instead of a ValueError",
            fails=("test_combine_errors",), says="should raise a ValueError, not AssertionError",
            edits=((_SUM, "    assert abs(sum(pcts) - 1.0) < 1e-6\n"),)),
    Variant("delegates_to_course_lib", _C, "calls course_lib's combine_scheds",
            fails=("test_combine_values", "test_combine_errors"), says="delegating",
            code='''
from course_lib import combine_scheds

def combine_schedules(pcts, scheds):
    return combine_scheds(pcts, scheds)
'''),
    Variant("float32_boundaries", _C, "the segment starts computed with a float32 tensor's cumsum",
            fails=("test_combine_values",), names="sched.float32_positions",
            code='''
import torch

def combine_schedules(pcts, scheds):
    p = torch.tensor(pcts)
    if len(p) != len(scheds):
        raise ValueError("one schedule per percentage")
    if (p < 0).any() or abs(float(p.sum()) - 1) > 1e-6:
        raise ValueError(f"bad percentages {pcts}")
    starts = torch.cat([torch.zeros(1), p.cumsum(0)[:-1]])

    def schedule(pos):
        if pos >= 1:
            return scheds[-1](1.0)
        i = max(k for k in range(len(p)) if p[k] > 0 and pos >= starts[k])
        return scheds[i](float((pos - starts[i]) / p[i]))
    return schedule
'''),
    Variant("interpolated_segments", _C, "each segment is a straight line between its schedule's end values",
            fails=("test_combine_values",), names="sched.interpolated",
            edits=((_RETURN, "t = (pos - starts[i]) / pcts[i]\n"
                             "        return scheds[i](0.0) + t * (scheds[i](1.0) - scheds[i](0.0))"),)),
    Variant("remembers_segment", _C, "the schedule keeps the current segment between calls and only moves forward",
            fails=("test_combine_values", "test_warmup_anneal_values"), says="remembers earlier calls",
            code='''
def combine_schedules(pcts, scheds):
    """Walks forward through the segments as training goes on (no search at every call)."""
    pcts = [float(p) for p in pcts]
    if len(pcts) != len(scheds) or min(pcts) < 0 or abs(sum(pcts) - 1) > 1e-6:
        raise ValueError(f"bad percentages {pcts} for {len(scheds)} schedules")
    state = {"i": 0, "start": 0.0}

    def schedule(pos):
        while state["i"] < len(pcts) - 1 and (pcts[state["i"]] == 0 or pos >= state["start"] + pcts[state["i"]]):
            state["start"] += pcts[state["i"]]
            state["i"] += 1
        i = state["i"]
        return scheds[i](min((pos - state["start"]) / pcts[i], 1.0))
    return schedule
'''),
    Variant("isclose_default_tolerance", _C, "math.isclose(sum(pcts), 1) (relative 1e-9), stricter than the contract's 1e-6",
            fails=("test_combine_values",), says="within the contract's 1e-6",
            edits=(("abs(sum(pcts) - 1.0) > 1e-6", "not __import__('math').isclose(sum(pcts), 1.0)"),)),
    Variant("loose_tolerance", _C, "the sum is checked within 1e-3, looser than the contract's 1e-6",
            fails=("test_combine_errors",), says="1.0001",
            edits=(("abs(sum(pcts) - 1.0) > 1e-6", "abs(sum(pcts) - 1.0) > 1e-3"),)),
    # Correct alternatives.
    Variant("fsum_isclose_abs", _C, None, code='''
import math
from functools import partial

def _at(pos, starts, pcts, scheds):
    if pos >= 1:
        return scheds[-1](1.0)
    for start, pct, sched in zip(reversed(starts), reversed(pcts), reversed(scheds)):
        if pct > 0 and pos >= start:
            return sched((pos - start) / pct)

def combine_schedules(pcts, scheds):
    """math.fsum for the sum, an absolute tolerance as the contract states, partial instead of a closure."""
    pcts, scheds = [float(p) for p in pcts], list(scheds)
    if len(pcts) != len(scheds):
        raise ValueError(f"{len(pcts)} percentages for {len(scheds)} schedules")
    if any(p < 0 for p in pcts):
        raise ValueError(f"negative percentage in {pcts}")
    if not math.isclose(math.fsum(pcts), 1.0, rel_tol=0.0, abs_tol=1e-6):
        raise ValueError(f"percentages sum to {math.fsum(pcts)}, not 1")
    starts = [math.fsum(pcts[:i]) for i in range(len(pcts))]
    return partial(_at, starts=starts, pcts=pcts, scheds=scheds)
'''),
    Variant("bisect_cumulative", _C, None, code='''
import bisect
import itertools

def combine_schedules(pcts, scheds):
    """Bisect over the segment starts; empty segments are dropped first."""
    pcts, scheds = list(map(float, pcts)), list(scheds)
    if len(pcts) != len(scheds):
        raise ValueError("pcts and scheds must have the same length")
    if min(pcts) < 0:
        raise ValueError(f"negative percentage in {pcts}")
    if not abs(sum(pcts) - 1) <= 1e-6:
        raise ValueError(f"percentages {pcts} sum to {sum(pcts)}, not 1")
    kept = [(p, s) for p, s in zip(pcts, scheds) if p > 0]
    starts = [0.0] + list(itertools.accumulate(p for p, _ in kept))[:-1]
    def f(pos):
        if pos >= 1:
            return kept[-1][1](1.0)
        i = bisect.bisect_right(starts, pos) - 1
        pct, sched = kept[i]
        return sched((pos - starts[i]) / pct)
    return f
'''),
    Variant("loop_with_running_end", _C, None, code='''
def combine_schedules(pcts, scheds):
    if len(pcts) != len(scheds):
        raise ValueError("one schedule per percentage")
    for p in pcts:
        if p < 0:
            raise ValueError("percentages must be >= 0")
    total = sum(pcts)
    if abs(total - 1) > 1e-6:
        raise ValueError(f"percentages must add up to 1, not {total}")
    def schedule(pos):
        start = 0.0
        for k, (pct, sched) in enumerate(zip(pcts, scheds)):
            end = start + pct
            last = k == len(pcts) - 1
            if pct > 0 and (pos < end or last):
                return sched(min((pos - start) / pct, 1.0))
            start = end
        return scheds[-1](1.0)
    return schedule
'''),
    Variant("float64_tensor_lesson_style", _C, None, code='''
import torch

def combine_schedules(pcts, scheds):
    """The lesson's torch version, in float64, with the checks and the pos = 1 case added."""
    p = torch.tensor([float(v) for v in pcts], dtype=torch.float64)
    if len(p) != len(scheds):
        raise ValueError("len(pcts) != len(scheds)")
    if (p < 0).any():
        raise ValueError("a percentage is negative")
    if abs(p.sum().item() - 1) > 1e-6:
        raise ValueError("percentages do not sum to 1")
    edges = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(p, 0)])
    def _inner(pos):
        if pos >= 1:
            return scheds[-1](1.0)
        idx = int((pos >= edges[:-1]).logical_and(p > 0).nonzero().max())
        actual = (pos - edges[idx]) / (edges[idx + 1] - edges[idx])
        return scheds[idx](float(actual))
    return _inner
'''),
    # warmup_anneal
    Variant("cosine_segments", _W, "sched_cos instead of sched_lin",
            fails=("test_warmup_anneal_values", "test_recorded_lr"), names="sched.lesson_cosine",
            edits=(("[sched_lin(0.6, 2.), sched_lin(2., 0.1)]", "[sched_cos(0.6, 2.), sched_cos(2., 0.1)]"),)),
    Variant("pcts_swapped", _W, "[0.7, 0.3] instead of [0.3, 0.7]",
            fails=("test_warmup_anneal_values", "test_recorded_lr"), names="sched.lesson_pcts_swapped",
            edits=(("[0.3, 0.7]", "[0.7, 0.3]"),)),
    Variant("schedules_swapped", _W, "anneal first, then warm up",
            fails=("test_warmup_anneal_values", "test_recorded_lr"), names="sched.lesson_scheds_swapped",
            edits=(("[sched_lin(0.6, 2.), sched_lin(2., 0.1)]", "[sched_lin(2., 0.1), sched_lin(0.6, 2.)]"),)),
    Variant("epochs_not_fractions", _W, "the segments given in epochs of an 8-epoch run ([2.4, 5.6])",
            fails=("test_warmup_anneal_values", "test_recorded_lr", "test_scheduled_training"),
            edits=(("[0.3, 0.7]", "[2.4, 5.6]"),)),
    Variant("peak_too_low", _W, "warms up to 1.0 instead of 2.0",
            fails=("test_warmup_anneal_values", "test_recorded_lr", "test_scheduled_training"),
            edits=(("[sched_lin(0.6, 2.), sched_lin(2., 0.1)]", "[sched_lin(0.6, 1.), sched_lin(1., 0.1)]"),)),
    Variant("constant_lr", _W, "a constant learning rate of 0.6",
            fails=("test_warmup_anneal_values", "test_recorded_lr", "test_scheduled_training"),
            code="def warmup_anneal():\n    return lambda pos: 0.6\n"),
    Variant("anneal_ends_at_zero", _W, "anneals to 0 instead of 0.1",
            fails=("test_warmup_anneal_values",),
            edits=(("sched_lin(2., 0.1)])", "sched_lin(2., 0.)])"),)),
    Variant("course_lib_combine", _W, "builds the schedule with course_lib's combine_scheds, not the student's own",
            fails=("test_warmup_anneal_values", "test_recorded_lr", "test_scheduled_training"),
            says="course_lib's combine_scheds",
            code='''
from course_lib import combine_scheds

def warmup_anneal():
    return combine_scheds([0.3, 0.7], [sched_lin(0.6, 2.), sched_lin(2., 0.1)])
'''),
    Variant("cosine_segments_closed_form", _W, "written out without combine_schedules, with cosine segments",
            fails=("test_warmup_anneal_values", "test_recorded_lr", "test_scheduled_training"),
            names="sched.lesson_cosine",
            code='''
import math

def warmup_anneal():
    def lr(pos):
        if pos < 0.3:
            a, b, t = 0.6, 2.0, pos / 0.3
        else:
            a, b, t = 2.0, 0.1, (pos - 0.3) / 0.7
        return a + (1 - math.cos(math.pi * t)) * (b - a) / 2
    return lr
'''),
    Variant("lambdas", _W, None, code='''
def warmup_anneal():
    warm = lambda p: 0.6 + 1.4 * p
    anneal = lambda p: 2.0 - 1.9 * p
    return combine_schedules((0.3, 0.7), (warm, anneal))
'''),
    Variant("closed_form", _W, None, code='''
def warmup_anneal():
    """Written out directly, without combine_schedules."""
    def lr(pos):
        if pos < 0.3:
            return 0.6 + (2.0 - 0.6) * pos / 0.3
        return 2.0 + (0.1 - 2.0) * (pos - 0.3) / 0.7
    return lr
'''),
]

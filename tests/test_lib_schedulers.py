"""Schedulers against their closed forms; combine_scheds at boundaries and on bad input."""
import math

import pytest

from course_lib import combine_scheds, sched_cos, sched_exp, sched_lin, sched_no

POSITIONS = [0.0, 0.1, 0.25, 0.5, 0.73, 0.999, 1.0]


@pytest.mark.parametrize("pos", POSITIONS)
def test_each_scheduler_matches_closed_form(pos):
    start, end = 0.7, 0.05
    assert sched_lin(start, end)(pos) == pytest.approx(start + pos * (end - start))
    assert sched_cos(start, end)(pos) == pytest.approx(end + (start - end) * (1 + math.cos(math.pi * pos)) / 2)
    assert sched_no(start, end)(pos) == pytest.approx(start)
    assert sched_exp(start, end)(pos) == pytest.approx(math.exp(math.log(start) + pos * math.log(end / start)))


def test_schedulers_hit_both_ends():
    for f in (sched_lin, sched_cos, sched_exp):
        assert f(0.3, 2.0)(0.0) == pytest.approx(0.3)
        assert f(0.3, 2.0)(1.0) == pytest.approx(2.0)


def test_combine_scheds_boundaries_belong_to_next_segment():
    # Segments chosen so the two sides of each boundary give different values.
    f = combine_scheds([0.25, 0.5, 0.25], [sched_lin(0., 1.), sched_lin(10., 20.), sched_no(-3., 99.)])
    assert f(0.0) == pytest.approx(0.0)
    assert f(0.125) == pytest.approx(0.5)
    assert f(0.25) == pytest.approx(10.0)      # exactly on a boundary: start of segment 2
    assert f(0.5) == pytest.approx(15.0)
    assert f(0.75) == pytest.approx(-3.0)      # start of segment 3
    assert f(1.0) == pytest.approx(-3.0)       # last scheduler's end value (sched_no: its start)
    g = combine_scheds([0.3, 0.7], [sched_lin(0.6, 2.), sched_lin(2., 0.1)])
    assert g(1.0) == pytest.approx(0.1)
    assert g(0.15) == pytest.approx(1.3)
    assert g(0.3 + 0.7 * 0.5) == pytest.approx(1.05)


def test_combine_scheds_zero_length_segment_is_skipped():
    f = combine_scheds([0.5, 0.0, 0.5], [sched_no(1., 1.), sched_no(7., 7.), sched_no(2., 2.)])
    assert f(0.5) == 2.0 and f(0.49) == 1.0


@pytest.mark.parametrize("pcts, n, match", [
    ([0.3, 0.6], 2, "sum to 1"),
    ([0.5, 0.6], 2, "sum to 1"),
    ([1.2, -0.2], 2, "non-negative"),
    ([0.5, 0.5], 3, "one percentage per scheduler"),
])
def test_combine_scheds_rejects_bad_percentages(pcts, n, match):
    with pytest.raises(ValueError, match=match):
        combine_scheds(pcts, [sched_lin(0., 1.)] * n)


def test_combine_scheds_tolerates_rounding():
    f = combine_scheds([1 / 3] * 3, [sched_lin(0., 1.)] * 3)
    assert f(0.5) == pytest.approx(0.5)

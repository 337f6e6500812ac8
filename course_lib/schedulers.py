"""Hyper-parameter schedules: pure functions of the position in training, from 0 to 1."""
from __future__ import annotations

import bisect
import functools
import math
from typing import Callable, Sequence

__all__ = ["annealer", "sched_lin", "sched_cos", "sched_no", "sched_exp", "combine_scheds"]

Schedule = Callable[[float], float]


def annealer(f: Callable[[float, float, float], float]) -> Callable[[float, float], Schedule]:
    """Turn f(start, end, pos) into a factory f(start, end) -> schedule(pos)."""
    @functools.wraps(f)
    def _inner(start: float, end: float) -> Schedule:
        return functools.partial(f, start, end)
    return _inner


@annealer
def sched_lin(start: float, end: float, pos: float) -> float:
    """Linear from start (pos 0) to end (pos 1)."""
    return start + pos * (end - start)


@annealer
def sched_cos(start: float, end: float, pos: float) -> float:
    """Half a cosine from start to end: flat at both ends."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


@annealer
def sched_no(start: float, end: float, pos: float) -> float:
    """Constant at start."""
    return start


@annealer
def sched_exp(start: float, end: float, pos: float) -> float:
    """Geometric from start to end (both must have the same sign and be non-zero)."""
    return start * (end / start) ** pos


def combine_scheds(pcts: Sequence[float], scheds: Sequence[Schedule]) -> Schedule:
    """Run scheds[i] over a fraction pcts[i] of training, each seeing its own position 0..1."""
    pcts, scheds = [float(p) for p in pcts], list(scheds)
    if len(pcts) != len(scheds):
        raise ValueError(f"combine_scheds needs one percentage per scheduler: got {len(pcts)} "
                         f"percentages and {len(scheds)} schedulers")
    if not pcts:
        raise ValueError("combine_scheds needs at least one scheduler")
    if any(p < 0 for p in pcts):
        raise ValueError(f"combine_scheds percentages must be non-negative, got {pcts}")
    if abs(sum(pcts) - 1.0) > 1e-6:
        raise ValueError(f"combine_scheds percentages must sum to 1, got {pcts} (sum {sum(pcts)})")
    # Keep only segments with a length: a zero-length one can never be the active one.
    segs = [(p, s) for p, s in zip(pcts, scheds) if p > 0]
    starts, acc = [], 0.0
    for p, _ in segs:
        starts.append(acc)
        acc += p

    def _inner(pos: float) -> float:
        pos = min(max(float(pos), 0.0), 1.0)  # clamp: rounding may put the position a hair outside
        if pos >= 1.0:
            return segs[-1][1](1.0)
        # bisect_right: a position exactly on a boundary belongs to the next segment.
        i = min(bisect.bisect_right(starts, pos) - 1, len(segs) - 1)
        return segs[i][1](min((pos - starts[i]) / segs[i][0], 1.0))
    return _inner

"""Q5's verdicts: combine_schedules and warmup_anneal against the contract's schedule, the learning rates a real
run recorded, and training with the schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from course_judge import forbid, verdict
from course_judge.compare import expect_close, expect_curve_like, expect_no_error
from course_judge.records import Fail, Raised, Records
from course_judge.reference import lesson_cnn, reference_losses
from course_recorder import q5

Schedule = Callable[[float], float]
COURSE_LIB = frozenset({"combine_scheds"})
PART_A = {"test_combine_values": "warmup_anneal is built with your combine_schedules, which fails its own test "
                                "(test_combine_values): fix Part A first."}
WHY = ("This exercise is to write the combination yourself (warmup_anneal with your own combine_schedules); "
       "delegating to course_lib's combine_scheds gets no points for this test.")
forbid("Q5", "combine_schedules", COURSE_LIB, WHY)
forbid("Q5", "warmup_anneal", COURSE_LIB, WHY)
lin = q5.lin


def reference_combine(pcts: Sequence[float], scheds: Sequence[Schedule]) -> Schedule:
    """The contract: segment i covers [start_i, start_i + pcts[i]); a boundary belongs to the later segment;
    zero-length segments are never active; pos 1 is the last segment at its own position 1."""
    pcts = [float(p) for p in pcts]
    starts = [sum(pcts[:i]) for i in range(len(pcts))]

    def schedule(pos: float) -> float:
        if pos >= 1.0:
            return scheds[-1](1.0)
        for start, pct, sched in reversed(list(zip(starts, pcts, scheds))):
            if pct > 0 and pos >= start:
                return sched((pos - start) / pct)
        raise AssertionError("unreachable")

    return schedule


def wrong_variants(pcts: list[float], scheds: list[Schedule]) -> dict[str, Schedule]:
    """What the common mistakes return, as schedules."""
    starts = [sum(pcts[:i]) for i in range(len(pcts))]
    starts32 = torch.tensor([0.0] + pcts, dtype=torch.float32).cumsum(0)[:-1].tolist()

    def active(pos: float, earlier: bool = False, edges=starts) -> int:
        for i in reversed(range(len(pcts))):
            if pcts[i] > 0 and (pos > edges[i] if earlier else pos >= edges[i]):
                return i
        return 0

    def earlier(pos: float) -> float:
        i = active(pos, earlier=True) if pos < 1 else len(pcts) - 1
        return scheds[i]((pos - starts[i]) / pcts[i])

    def float32(pos: float) -> float:  # float32 boundaries, compared with the position in float64
        i = active(pos, edges=starts32) if pos < 1 else len(pcts) - 1
        return scheds[i]((pos - starts32[i]) / pcts[i])

    def all_float32(pos: float) -> float:  # the position cast to float32 too (a tensor comparison does that)
        p32 = float(torch.tensor(pos, dtype=torch.float32))
        i = active(p32, edges=starts32) if pos < 1 else len(pcts) - 1
        pct32 = float(torch.tensor(pcts[i], dtype=torch.float32))
        return scheds[i](float(torch.tensor((p32 - starts32[i]) / pct32, dtype=torch.float32)))

    def not_rescaled(pos: float) -> float:
        i = active(pos) if pos < 1 else len(pcts) - 1
        return scheds[i](pos - starts[i])

    def not_shifted(pos: float) -> float:
        i = active(pos) if pos < 1 else len(pcts) - 1
        return scheds[i](pos / pcts[i])

    def global_pos(pos: float) -> float:
        i = active(pos) if pos < 1 else len(pcts) - 1
        return scheds[i](pos)

    return {
        "a position exactly on a boundary is given to the earlier segment (at its position 1); the contract "
        "gives it to the later segment (at its position 0).": earlier,
        "the segment boundaries were computed in float32 (a float32 tensor's cumsum): 0.3 is 0.30000001 in float32, "
        "so positions next to a boundary land in the wrong segment. Work in Python floats.": float32,
        "the segment boundaries were computed in float32 (a float32 tensor of the percentages), and positions are "
        "compared with them in float32: 0.3 is 0.30000001 there, so positions next to a boundary land in the wrong "
        "segment. Work in Python floats.": all_float32,
        "the position is not rescaled inside its segment: use (pos - start) / pct, not pos - start.": not_rescaled,
        "the segment's start is not subtracted: use (pos - start) / pct, not pos / pct.": not_shifted,
        "each schedule gets the overall position instead of its own position 0..1 within its segment.": global_pos,
        "the schedules are used in the wrong order (scheds[i] belongs to pcts[i]).": reference_combine(pcts, scheds[::-1]),
    }


def recorded_values(r: Records, key: str, positions: Sequence[float], what: str) -> list[float]:
    """The schedule's recorded value at each position (Fail on an exception or a value that is not a number)."""
    got = []
    for j, pos in enumerate(positions):
        value = r.get(f"{key}/{j}")
        if isinstance(value, Raised):
            if value.is_a("DelegationError"):
                raise Fail(WHY)
            hint = " (pos 1 belongs to the last segment, at its own position 1)" if pos >= 1 else ""
            raise Fail(f"{what}: at pos={pos} it raised {value}{hint}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise Fail(f"{what}: at pos={pos} it returned {getattr(value, 'type', type(value).__name__)}; expected a number")
        got.append(float(value))
    return got


def expect_schedule(got: list[float], positions: Sequence[float], expected: Schedule, what: str,
                    mistakes: dict[str, Schedule] | None = None) -> None:
    """The recorded values equal the expected schedule's at the positions; name the mistake they match."""
    # pos 1 is checked on its own: a mistake inside the segments is recognised whatever is done at pos 1.
    for part in ([i for i, p in enumerate(positions) if p < 1], [i for i, p in enumerate(positions) if p >= 1]):
        if not part:
            continue
        mine = torch.tensor([got[i] for i in part], dtype=torch.float64)
        want = torch.tensor([float(expected(positions[i])) for i in part], dtype=torch.float64)
        wrong = {d: torch.tensor([float(f(positions[i])) for i in part], dtype=torch.float64)
                 for d, f in (mistakes or {}).items()}
        expect_close(mine, want, f"{what} at positions {[round(positions[i], 10) for i in part]}", atol=1e-6,
                     rtol=1e-6, mistakes=wrong)


def _made(r: Records, key: str, what: str) -> None:
    made = r.get(key)
    if isinstance(made, Raised):
        if made.is_a("DelegationError"):
            raise Fail(WHY)
        extra = (" Ten times 0.1 is 0.9999999999999999 in floating point: compare the sum with 1 within a tolerance "
                 "(1e-6), not with ==." if made.is_a("ValueError") and "0.1" in what else "")
        raise Fail(f"{what} raised {made}.{extra}")


@verdict("Q5", "test_combine_values", uses=("combine_schedules",))
def combine_values(r: Records) -> None:
    for i, (pcts, pairs, positions) in enumerate(q5.VALUE_CASES):
        scheds = q5.schedules(pairs)
        what = f"combine_schedules({[round(p, 6) for p in pcts] if len(pcts) < 10 else '[0.1] * 10'}, ...)"
        _made(r, f"case{i}", what)
        got = recorded_values(r, f"case{i}", positions, what)
        mistakes = wrong_variants([float(p) for p in pcts], scheds) if 0.0 not in pcts and len(pcts) < 10 else None
        expect_schedule(got, positions, reference_combine(pcts, scheds), what, mistakes)


@verdict("Q5", "test_combine_errors", uses=("combine_schedules",))
def combine_errors(r: Records) -> None:
    for i, (pcts, _, why) in enumerate(q5.ERROR_CASES):
        value = r.get(f"case{i}")
        what = f"combine_schedules({pcts}, ...)"
        if isinstance(value, Raised):
            if value.is_a("DelegationError"):
                raise Fail(WHY)
            if not value.is_a("ValueError"):
                raise Fail(f"{what} raised {value}; expected a ValueError for {why} (it should raise a ValueError, "
                           f"not {value.type}).")
            if not value.message.strip():
                raise Fail(f"{what} raised ValueError without a message; say what is wrong ({why}).")
            continue
        raise Fail(f"{what} raised nothing; expected a ValueError for {why}.")


def lesson_schedule() -> Schedule:
    """The lesson's warm-up/anneal learning rate: 0.6 -> 2.0 over 30 %, then 2.0 -> 0.1, both linear."""
    return reference_combine([0.3, 0.7], [lin(0.6, 2.0), lin(2.0, 0.1)])


def lesson_mistakes() -> dict[str, Schedule]:
    """What the common mistakes in building the lesson's schedule give."""
    cos = lambda a, b: (lambda p: a + (1 + math.cos(math.pi * (1 - p))) * (b - a) / 2)  # noqa: E731
    return {
        "cosine segments were used; the lesson's schedule is linear (sched_lin) in both segments.":
            reference_combine([0.3, 0.7], [cos(0.6, 2.0), cos(2.0, 0.1)]),
        "the percentages are swapped: warm up over the first 30 % ([0.3, 0.7]), then anneal over 70 %.":
            reference_combine([0.7, 0.3], [lin(0.6, 2.0), lin(2.0, 0.1)]),
        "the two schedules are swapped: first sched_lin(0.6, 2.), then sched_lin(2., 0.1) (warm up first).":
            reference_combine([0.3, 0.7], [lin(2.0, 0.1), lin(0.6, 2.0)]),
    }


def _part_a_is_wrong(r: Records) -> str | None:
    """Why the student's own combine_schedules gets the lesson's schedule wrong, if it does."""
    try:
        _made(r, "combine", "combine_schedules([0.3, 0.7], ...)")
        got = recorded_values(r, "combine", q5.LESSON_POSITIONS, "combine_schedules([0.3, 0.7], ...)")
        expect_schedule(got, q5.LESSON_POSITIONS, lesson_schedule(), "combine_schedules([0.3, 0.7], ...)")
    except Fail as err:
        return str(err).splitlines()[0]
    return None


@verdict("Q5", "test_warmup_anneal_values", uses=("warmup_anneal",), after=PART_A)
def warmup_anneal_values(r: Records) -> None:
    try:
        _made(r, "schedule", "warmup_anneal()")
        got = recorded_values(r, "warmup", q5.LESSON_POSITIONS, "warmup_anneal()")
        expect_schedule(got, q5.LESSON_POSITIONS, lesson_schedule(), "warmup_anneal()", mistakes=lesson_mistakes())
    except Fail as err:
        cause = _part_a_is_wrong(r) if str(err) != WHY else None
        if cause:
            raise Fail(f"{err}\nwarmup_anneal is built with your combine_schedules, which is wrong here: {cause}. "
                       f"Fix Part A first.") from None
        raise


def expected_lrs(epochs: int, iters: int = 5) -> list[float]:
    """The lesson's schedule at the positions a Recorder samples: (epoch + batch / iters) / epochs."""
    reference = lesson_schedule()
    return [reference((epoch + i / iters) / epochs) for epoch in range(epochs) for i in range(iters)]


@verdict("Q5", "test_recorded_lr", uses=("warmup_anneal",), after=PART_A)
def recorded_lr(r: Records) -> None:
    for epochs in q5.RECORDED_EPOCHS:
        recorded = r.get(f"epochs{epochs}")
        if isinstance(recorded, Raised) and recorded.is_a("DelegationError"):
            raise Fail(WHY)
        recorded = expect_no_error(recorded, f"a {epochs}-epoch run with ParamScheduler('lr', warmup_anneal())")
        expected = expected_lrs(epochs)
        ok = isinstance(recorded, list) and len(recorded) == len(expected) and all(
            isinstance(a, (int, float)) and abs(a - b) < 1e-6 for a, b in zip(recorded, expected))
        if not ok:
            shown = [round(v, 4) for v in recorded] if isinstance(recorded, list) else recorded
            raise Fail(f"in a {epochs}-epoch run the Recorder recorded {shown}; the lesson's schedule gives "
                       f"{[round(v, 4) for v in expected]} at the same positions")


@verdict("Q5", "test_scheduled_training", uses=("warmup_anneal",), after=PART_A)
def scheduled_training(r: Records) -> None:
    run = r.get("run")
    if isinstance(run, Raised) and run.is_a("DelegationError"):
        raise Fail(WHY)
    run = expect_no_error(run, "training with warmup_anneal()")
    steps = q5.TRAINING["steps"]
    lrs = [lesson_schedule()(step / steps) for step in range(steps)]
    reference = reference_losses("Q5-scheduled", lambda: lesson_cnn(), lrs=lrs, init=False, **q5.TRAINING)
    expect_curve_like(run, reference["losses"], "training with warmup_anneal()", rtol=0.02)

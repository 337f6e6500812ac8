"""Q5's verdicts: combine_schedules and warmup_anneal against the contract's schedule, the learning rates a real
run recorded, and training with the schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from course_judge import forbid, verdict
from course_judge.compare import expect_close, expect_curve_like, expect_no_error
from course_judge.records import Fail, Missing, Raised, Records
from course_judge.reference import lesson_cnn, reference_losses
from course_recorder import q5

Schedule = Callable[[float], float]
COURSE_LIB = frozenset({"combine_scheds"})
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

    def interpolated(pos: float) -> float:  # a straight line between the segment's end values
        i = active(pos) if pos < 1 else len(pcts) - 1
        t = (pos - starts[i]) / pcts[i]
        return scheds[i](0.0) + t * (scheds[i](1.0) - scheds[i](0.0))

    return {
        "sched.boundary_to_earlier": earlier,
        "sched.float32_boundaries": float32,
        "sched.float32_positions": all_float32,
        "sched.not_rescaled": not_rescaled,
        "sched.not_shifted": not_shifted,
        "sched.global_position": global_pos,
        "sched.wrong_order": reference_combine(pcts, scheds[::-1]),
        "sched.interpolated": interpolated,
    }


def segment_of(pos: float, pcts: Sequence[float]) -> int:
    """The segment the contract gives `pos` to: the last one of nonzero length that has started; pos 1: the last."""
    if pos >= 1.0:
        return len(pcts) - 1
    starts = [sum(pcts[:i]) for i in range(len(pcts))]
    return max(i for i in range(len(pcts)) if pcts[i] > 0 and pos >= starts[i])


def segment_diagnosis(got: list[float], positions: Sequence[float], pcts: Sequence[float],
                      scheds: Sequence[Schedule]) -> str | None:
    """Which segments the wrong values lie in, and what they look like there (when no catalogued mistake matches)."""
    pcts = [float(p) for p in pcts]
    expected = reference_combine(pcts, scheds)
    wrong, right = {}, set()
    for value, pos in zip(got, positions):
        i = segment_of(pos, pcts)
        if abs(value - expected(pos)) > 1e-6 * (1 + abs(expected(pos))):
            wrong.setdefault(i, []).append((pos, value))
        else:
            right.add(i)
    if not wrong:
        return None
    for i, found in wrong.items():
        ends = {"start value scheds[i](0)": scheds[i](0.0), "end value scheds[i](1)": scheds[i](1.0)}
        for name, end in ends.items():
            if all(abs(v - end) <= 1e-6 * (1 + abs(end)) for _, v in found) and len(found) > 1:
                return (f"In segment {i} your values are its schedule's {name.replace('[i]', f'[{i}]')} at every "
                        f"position: pass the position within the segment, (pos - start) / pct, to scheds[{i}].")
    shown = ", ".join(f"{i} (pos {', '.join(str(round(p, 6)) for p, _ in found)})" for i, found in sorted(wrong.items()))
    ok = f" and right in segment(s) {', '.join(map(str, sorted(right - set(wrong))))}" if right - set(wrong) else ""
    return (f"Your values are wrong in segment(s) {shown}{ok}: inside segment i the value is "
            f"scheds[i]((pos - start_i) / pcts[i]), with start_i the sum of the percentages before it.")


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
                    mistakes: dict[str, Schedule] | None = None,
                    diagnose: Callable[[list[float], list[float]], str | None] | None = None) -> None:
    """The recorded values equal the expected schedule's at the positions; name the mistake they match, or say
    what the values show (diagnose(values, positions))."""
    # pos 1 is checked on its own: a mistake inside the segments is recognised whatever is done at pos 1.
    for part in ([i for i, p in enumerate(positions) if p < 1], [i for i, p in enumerate(positions) if p >= 1]):
        if not part:
            continue
        mine = torch.tensor([got[i] for i in part], dtype=torch.float64)
        want = torch.tensor([float(expected(positions[i])) for i in part], dtype=torch.float64)
        wrong = {d: torch.tensor([float(f(positions[i])) for i in part], dtype=torch.float64)
                 for d, f in (mistakes or {}).items()}
        shown = [positions[i] for i in part]
        expect_close(mine, want, f"{what} at positions {[round(p, 10) for p in shown]}", atol=1e-6, rtol=1e-6,
                     mistakes=wrong, diagnose=(lambda v, shown=shown: diagnose(v.tolist(), shown)) if diagnose else None)


def _made(r: Records, key: str, what: str, pcts: Sequence[float] | None = None) -> None:
    made = r.get(key)
    if isinstance(made, Raised):
        if made.is_a("DelegationError"):
            raise Fail(WHY)
        extra = ""
        if made.is_a("ValueError") and "0.1" in what:
            extra = (" Ten times 0.1 is 0.9999999999999999 in floating point: compare the sum with 1 within a tolerance "
                     "(1e-6), not with ==.")
        elif made.is_a("ValueError") and pcts is not None and abs(sum(pcts) - 1) <= 1e-6:
            extra = (f" The percentages sum to {sum(pcts):.10g}, within the contract's 1e-6 of 1: accept them "
                     f"(abs(sum(pcts) - 1) <= 1e-6; math.isclose's default tolerance, 1e-9, is stricter than that).")
        raise Fail(f"{what} raised {made}.{extra}")


@verdict("Q5", "test_combine_values", uses=("combine_schedules",))
def combine_values(r: Records) -> None:
    for i, (pcts, pairs, positions) in enumerate(q5.VALUE_CASES):
        scheds = q5.schedules(pairs)
        what = f"combine_schedules({[round(p, 8) for p in pcts] if len(pcts) < 10 else '[0.1] * 10'}, ...)"
        _made(r, f"case{i}", what, pcts)
        got = recorded_values(r, f"case{i}", positions, what)
        mistakes = wrong_variants([float(p) for p in pcts], scheds) if 0.0 not in pcts and len(pcts) < 10 else None
        expect_schedule(got, positions, reference_combine(pcts, scheds), what, mistakes,
                        diagnose=lambda v, where, pcts=pcts, scheds=scheds: segment_diagnosis(v, where, pcts, scheds))
        if i == q5.ORDER_CASE:
            _same_in_any_order(r, got, positions, pcts, scheds, what)


def _same_in_any_order(r: Records, got: list[float], positions: Sequence[float], pcts: Sequence[float],
                       scheds: Sequence[Schedule], what: str) -> None:
    """The schedule asked again, in another order: a plain function of pos gives the same values."""
    again = recorded_values(r, "order", q5.ORDER, f"{what}, asked again in another order")
    first = dict(zip(positions, got))
    expect_asked_again(again, q5.ORDER, reference_combine(pcts, scheds), what, positions, "in the order "
                       f"{list(q5.ORDER)}", lambda pos: f"the first time: {first[pos]:.6g}",
                       " (a segment index or start kept between calls)")


def expect_asked_again(again: list[float], order: Sequence[float], expected: Schedule, what: str,
                       earlier: Sequence[float], how: str, first: Callable[[float], str], why: str = "",
                       extra: str = "") -> None:
    """A schedule asked again at `order` after `earlier` gives the contract's values: it is a plain function of pos."""
    for pos, value in zip(order, again):
        if not _same_value(value, float(expected(pos))):
            raise Fail(f"{what}: asked again after the positions {[round(p, 4) for p in earlier]}, now {how}, at "
                       f"pos={pos:.6g} it gave {value:.6g}, expected {expected(pos):.6g} ({first(pos)}). Your schedule "
                       f"remembers earlier calls{why}: a schedule is a plain function of pos, called at any position in "
                       f"any order and again for every run.{extra}")


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
        "sched.lesson_cosine": reference_combine([0.3, 0.7], [cos(0.6, 2.0), cos(2.0, 0.1)]),
        "sched.lesson_pcts_swapped": reference_combine([0.7, 0.3], [lin(0.6, 2.0), lin(2.0, 0.1)]),
        "sched.lesson_scheds_swapped": reference_combine([0.3, 0.7], [lin(2.0, 0.1), lin(0.6, 2.0)]),
    }


def _number_or_raised(value: object) -> object:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-6 * (1 + abs(b))
    return isinstance(a, Raised) and isinstance(b, Raised) and a.type == b.type


def from_part_a(r: Records, values: list[object], key: str, positions: Sequence[float]) -> str:
    """A sentence when the schedule's values (numbers, or Raised) are exactly what the student's own
    combine_schedules gives for the lesson's schedule at the same positions (recorded under key/j), and those are
    wrong: then Part A is the cause. '' otherwise (a warmup_anneal written without it, or wrong for its own reason)."""
    if not r.has("combine") or isinstance(r.get("combine"), Raised) or not all(r.has(f"{key}/{j}") for j in range(len(positions))):
        return ""
    combined = [_number_or_raised(r.get(f"{key}/{j}")) for j in range(len(positions))]
    values = [_number_or_raised(v) for v in values]
    if len(values) != len(combined) or not all(_same_value(a, b) for a, b in zip(values, combined)):
        return ""
    reference = lesson_schedule()
    for pos, value in zip(positions, combined):
        want = reference(pos)
        if not _same_value(value, want):
            got = f"it raised {value}" if isinstance(value, Raised) else f"it gives {value:.6g}"
            return (f"\nThese are exactly the values your combine_schedules gives for the lesson's schedule, and they "
                    f"are wrong (at pos={pos:.6g} {got}, the contract {want:.6g}): warmup_anneal is built with it, so "
                    f"fix Part A first (test_combine_values).")
    return ""


@verdict("Q5", "test_warmup_anneal_values", uses=("warmup_anneal",))
def warmup_anneal_values(r: Records) -> None:
    _made(r, "schedule", "warmup_anneal()")
    try:
        got = recorded_values(r, "warmup", q5.LESSON_POSITIONS, "warmup_anneal()")
        expect_schedule(got, q5.LESSON_POSITIONS, lesson_schedule(), "warmup_anneal()", mistakes=lesson_mistakes())
    except Fail as err:
        if str(err) == WHY or isinstance(err, Missing):
            raise
        values = [r.get(f"warmup/{j}") for j in range(len(q5.LESSON_POSITIONS))]
        raise Fail(f"{err}{from_part_a(r, values, 'combine', q5.LESSON_POSITIONS)}") from None
    backwards = q5.LESSON_POSITIONS[::-1]
    again = recorded_values(r, "warmup_again", backwards, "warmup_anneal(), asked again backwards")
    values = [r.get(f"warmup_again/{j}") for j in range(len(backwards))]
    expect_asked_again(again, backwards, lesson_schedule(), "warmup_anneal()", q5.LESSON_POSITIONS, "backwards",
                       lambda pos: "the first time it was right",
                       extra=from_part_a(r, values, "combine_again", backwards))


def expected_lrs(epochs: int) -> list[float]:
    """The lesson's schedule at the positions a Recorder samples: (epoch + batch / iters) / epochs."""
    return [lesson_schedule()(pos) for pos in q5.lr_positions(epochs)]


@verdict("Q5", "test_recorded_lr", uses=("warmup_anneal",))
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
            cause = from_part_a(r, recorded, f"combine{epochs}", q5.lr_positions(epochs)) \
                if isinstance(recorded, list) else ""
            raise Fail(f"in a {epochs}-epoch run the Recorder recorded {shown}; the lesson's schedule gives "
                       f"{[round(v, 4) for v in expected]} at the same positions{cause}")


@verdict("Q5", "test_scheduled_training", uses=("warmup_anneal",))
def scheduled_training(r: Records) -> None:
    run = r.get("run")
    if isinstance(run, Raised) and run.is_a("DelegationError"):
        raise Fail(WHY)
    run = expect_no_error(run, "training with warmup_anneal()")
    positions = q5.training_positions()
    lrs = [lesson_schedule()(pos) for pos in positions]
    used = r.get("lrs") if r.has("lrs") else None
    if isinstance(used, list) and (len(used) != len(lrs) or not all(
            isinstance(a, (int, float)) and abs(a - b) <= 1e-6 for a, b in zip(used, lrs))):
        step = next((k for k, (a, b) in enumerate(zip(used, lrs)) if not abs(a - b) <= 1e-6), min(len(used), len(lrs)))
        shown = f"{used[step]:.6g}" if step < len(used) else "nothing"
        want = f"{lrs[step]:.6g}" if step < len(lrs) else "nothing"
        raise Fail(f"training with warmup_anneal(): the learning rate of step {step + 1} of {len(lrs)} (pos "
                   f"{positions[min(step, len(positions) - 1)]:.4g}) was {shown}; the lesson's schedule gives {want}, so "
                   f"the run cannot follow the reference run.{from_part_a(r, used, 'combine_steps', positions)}")
    reference = reference_losses("Q5-scheduled", lambda: lesson_cnn(), lrs=lrs, init=False, **q5.TRAINING)
    expect_curve_like(run, reference["losses"], "training with warmup_anneal()", rtol=0.02)

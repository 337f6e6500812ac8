"""Hidden-test helpers for Q5 (schedulers): reference schedules, value checks that name mistakes,
the learning rate a real run records, and a scheduled training curve."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from course_grading.checks import _grading_batches, expect_close
from course_lib import DataBunch, Dataset, ParamScheduler, Recorder, get_dls, get_runner, sched_lin
from course_lib import schedulers as _schedulers

Schedule = Callable[[float], float]


def lin(start: float, end: float) -> Schedule:
    """A linear schedule written here, so the tests do not lean on course_lib's."""
    return lambda pos: start + pos * (end - start)


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


def _wrong_variants(pcts: list[float], scheds: list[Schedule]) -> dict[str, Schedule]:
    """What the common mistakes return, as schedules."""
    starts = [sum(pcts[:i]) for i in range(len(pcts))]

    def active(pos: float, earlier: bool = False) -> int:
        for i in reversed(range(len(pcts))):
            if pcts[i] > 0 and (pos > starts[i] if earlier else pos >= starts[i]):
                return i
        return 0

    def earlier(pos: float) -> float:
        i = active(pos, earlier=True) if pos < 1 else len(pcts) - 1
        return scheds[i]((pos - starts[i]) / pcts[i])

    def not_rescaled(pos: float) -> float:
        i = active(pos) if pos < 1 else len(pcts) - 1
        return scheds[i](pos - starts[i])

    def not_shifted(pos: float) -> float:
        i = active(pos) if pos < 1 else len(pcts) - 1
        return scheds[i](pos / pcts[i])

    def global_pos(pos: float) -> float:
        i = active(pos) if pos < 1 else len(pcts) - 1
        return scheds[i](pos)

    swapped = reference_combine(pcts, scheds[::-1])
    return {
        "a position exactly on a boundary is given to the earlier segment (at its position 1); the contract "
        "gives it to the later segment (at its position 0).": earlier,
        "the position is not rescaled inside its segment: use (pos - start) / pct, not pos - start.": not_rescaled,
        "the segment's start is not subtracted: use (pos - start) / pct, not pos / pct.": not_shifted,
        "each schedule gets the overall position instead of its own position 0..1 within its segment.": global_pos,
        "the schedules are used in the wrong order (scheds[i] belongs to pcts[i]).": swapped,
    }


def expect_schedule(schedule: Schedule, expected: Schedule, positions: Sequence[float], what: str,
                    mistakes: dict[str, Schedule] | None = None) -> None:
    """The schedule's values at the positions equal the expected ones; name the mistake they match."""
    got = []
    for pos in positions:
        try:
            value = schedule(pos)
        except Exception as err:  # the message must say at which position it broke
            hint = " (pos 1 belongs to the last segment, at its own position 1)" if pos >= 1 else ""
            raise AssertionError(f"{what}: at pos={pos} it raised {type(err).__name__}: {err}{hint}") from None
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise AssertionError(f"{what}: at pos={pos} it returned a tensor of shape {tuple(value.shape)}; expected a number")
            value = value.item()
        if not isinstance(value, (int, float)):
            raise AssertionError(f"{what}: at pos={pos} it returned {type(value).__name__}; expected a number")
        got.append(float(value))
    # pos 1 is checked on its own: a mistake inside the segments is recognised whatever is done at pos 1.
    for part in ([p for p in positions if p < 1], [p for p in positions if p >= 1]):
        if not part:
            continue
        got_part = torch.tensor([g for p, g in zip(positions, got) if p in part], dtype=torch.float64)
        want = torch.tensor([float(expected(p)) for p in part], dtype=torch.float64)
        wrong = {d: torch.tensor([float(f(p)) for p in part], dtype=torch.float64) for d, f in (mistakes or {}).items()}
        expect_close(got_part, want, f"{what} at positions {part}", atol=1e-6, rtol=1e-6, mistakes=wrong)


_DELEGATION = ("combine_schedules called course_lib's combine_scheds. This exercise is to write the combination "
               "yourself; delegating to course_lib's gets no points for this test.")


def _refuse(pcts, scheds):
    # Runs with course_lib.schedulers' globals (its code object is swapped in), so only builtins are used.
    raise RuntimeError("combine_schedules called course_lib's combine_scheds. This exercise is to write the "
                       "combination yourself; delegating to course_lib's gets no points for this test.")


@contextlib.contextmanager
def own_combine() -> Iterator[None]:
    """While active, course_lib's combine_scheds raises, however it was imported (its code is swapped)."""
    original = _schedulers.combine_scheds.__code__
    _schedulers.combine_scheds.__code__ = _refuse.__code__
    try:
        yield
    except RuntimeError as err:
        if str(err) == _DELEGATION:
            raise AssertionError(_DELEGATION) from None
        raise
    finally:
        _schedulers.combine_scheds.__code__ = original


def check_combine_values(combine: Callable[..., Schedule]) -> None:
    """Values of the student's combine_schedules on schedules whose segments do not join up."""
    cases = [
        ([0.25, 0.5, 0.25], [lin(1., 2.), lin(10., 20.), lin(100., 300.)],
         [0.0, 0.1, 0.2, 0.25, 0.5, 0.6, 0.75, 0.875, 0.99, 1.0]),
        ((0.625, 0.375), (lin(-1., 1.), lin(5., 3.)), [0.0, 0.3, 0.625, 0.8, 1.0]),
        ([1.0], [lin(2., 4.)], [0.0, 0.5, 1.0]),
    ]
    with own_combine():
        for pcts, scheds, positions in cases:
            what = f"combine_schedules({list(pcts)}, ...)"
            expect_schedule(combine(pcts, scheds), reference_combine(pcts, list(scheds)), positions, what,
                            mistakes=_wrong_variants([float(p) for p in pcts], list(scheds)))
        pcts, scheds = [0.5, 0.0, 0.5], [lin(1., 2.), lin(7., 8.), lin(10., 20.)]
        expect_schedule(combine(pcts, scheds), reference_combine(pcts, scheds), [0.25, 0.5, 0.75, 1.0],
                        "combine_schedules([0.5, 0.0, 0.5], ...) (a zero-length segment is never active)")
        pcts = [0.1] * 10  # sums to 0.9999999999999999 in floating point: must be accepted
        scheds = [lin(float(i), i + 0.5) for i in range(10)]
        try:
            schedule = combine(pcts, scheds)
        except ValueError as err:
            raise AssertionError(f"combine_schedules([0.1] * 10, ...) raised ValueError ({err}); ten times 0.1 is "
                                 f"0.9999999999999999 in floating point: compare the sum with 1 within a "
                                 f"tolerance (1e-6), not with ==.") from None
        expect_schedule(schedule, reference_combine(pcts, scheds), [0.0, 0.05, 0.55, 0.95, 1.0],
                        "combine_schedules([0.1] * 10, ...)")


def check_combine_errors(combine: Callable[..., Schedule]) -> None:
    """A ValueError with a message for percentages that are negative or do not sum to 1, or lengths that differ."""
    bad = [
        ([0.3, 0.6], [lin(0., 1.), lin(1., 0.)], "percentages that sum to 0.9"),
        ([0.5, 0.6], [lin(0., 1.), lin(1., 0.)], "percentages that sum to 1.1"),
        ([1.2, -0.2], [lin(0., 1.), lin(1., 0.)], "a negative percentage (the sum is 1)"),
        ([0.3, 0.7], [lin(0., 1.)], "two percentages and one schedule"),
    ]
    with own_combine():
        for pcts, scheds, why in bad:
            try:
                schedule = combine(pcts, scheds)
                schedule(0.5)
            except ValueError as err:
                if not str(err).strip():
                    raise AssertionError(f"combine_schedules({pcts}, ...) raised ValueError without a message; "
                                         f"say what is wrong ({why}).") from None
                continue
            except Exception as err:
                raise AssertionError(f"combine_schedules({pcts}, ...) raised {type(err).__name__}: {err}; expected a "
                                     f"ValueError for {why}.") from None
            raise AssertionError(f"combine_schedules({pcts}, ...) raised nothing; expected a ValueError for {why}.")


def lesson_schedule() -> Schedule:
    """The lesson's warm-up/anneal learning rate: 0.6 -> 2.0 over 30 %, then 2.0 -> 0.1, both linear."""
    return reference_combine([0.3, 0.7], [lin(0.6, 2.0), lin(2.0, 0.1)])


def lesson_schedule_mistakes() -> dict[str, Schedule]:
    """What the common mistakes in building the lesson's schedule give."""
    cos = lambda a, b: (lambda p: a + (1 + math.cos(math.pi * (1 - p))) * (b - a) / 2)  # noqa: E731
    return {
        "cosine segments were used; the lesson's schedule is linear (sched_lin) in both segments.":
            reference_combine([0.3, 0.7], [cos(0.6, 2.0), cos(2.0, 0.1)]),
        "the percentages are swapped: warm up over the first 30 % ([0.3, 0.7]), then anneal over 70 %.":
            reference_combine([0.7, 0.3], [lin(0.6, 2.0), lin(2.0, 0.1)]),
        "the two schedules are swapped: first sched_lin(0.6, 2.), then sched_lin(2., 0.1).":
            reference_combine([0.3, 0.7], [lin(2.0, 0.1), lin(0.6, 2.0)]),
    }


LESSON_POSITIONS = [0.0, 0.15, 0.3, 0.3 + 0.7 * 0.25, 0.65, 0.9, 1.0]


def recorded_lrs(schedule: Schedule, epochs: int = 2, n_train: int = 40, bs: int = 8) -> tuple[list[float], list[float]]:
    """The learning rates a Recorder records in a tiny real run with ParamScheduler('lr', schedule),
    and the ones the lesson's schedule gives at the same positions (epoch + batch/iters) / epochs."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n_train, 12, generator=g), torch.randint(0, 3, (n_train,), generator=g)
    train_dl, valid_dl = get_dls(Dataset(x, y), Dataset(x[:8], y[:8]), bs)
    data = DataBunch(train_dl, valid_dl, c=3)
    torch.manual_seed(0)
    learn, run = get_runner(nn.Linear(12, 3), data, lr=0.01, cbs=[Recorder, partial(ParamScheduler, "lr", schedule)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run.fit(epochs, learn)
    iters = len(train_dl)
    reference = lesson_schedule()
    expected = [reference((epoch + i / iters) / epochs) for epoch in range(epochs) for i in range(iters)]
    return run.recorder.lrs[0], expected


def scheduled_losses(schedule: Schedule, reference: Schedule, steps: int = 30, bs: int = 64,
                     seed: int = 0) -> tuple[list[float], list[float]]:
    """Train the lesson's CNN (nn.BatchNorm2d blocks) with each schedule from the same weights on the same batches."""
    from course_grading.q4_checks import cnn_maker, reference_conv_layer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batches = _grading_batches(steps, bs, seed)
        results = []
        for sched in (schedule, reference):
            torch.manual_seed(seed)
            model = cnn_maker(reference_conv_layer)()
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            losses = []
            for step, (xb, yb) in enumerate(batches):
                for group in opt.param_groups:
                    group["lr"] = float(sched(step / steps))
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                opt.step()
                opt.zero_grad()
                losses.append(loss.item())
            results.append(losses)
    finally:
        torch.set_num_threads(threads)
    return results[0], results[1]


__all__ = ["lin", "reference_combine", "expect_schedule", "own_combine", "check_combine_values",
           "check_combine_errors", "lesson_schedule", "lesson_schedule_mistakes", "LESSON_POSITIONS",
           "recorded_lrs", "scheduled_losses", "sched_lin"]

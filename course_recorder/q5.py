"""Q5's probes: the student's combine_schedules and warmup_anneal, the learning rates a real run records with
them, and a scheduled training run."""

from __future__ import annotations

import math
from functools import partial

import torch

from course_recorder import recording
from course_recorder.guard import refusing
from course_recorder.inputs import cnn_of
from course_recorder.probes import training_run


def lin(start: float, end: float):
    """A linear schedule written here, so the tests do not lean on course_lib's."""
    return lambda pos: start + pos * (end - start)


def curve(kind: str, start: float, end: float):
    """A schedule that is not a straight line: `cos` (half a cosine, as sched_cos) or `sq` (a parabola)."""
    if kind == "cos":
        return lambda pos: start + (1 - math.cos(math.pi * pos)) * (end - start) / 2
    if kind == "sq":
        return lambda pos: start + pos * pos * (end - start)
    raise ValueError(f"unknown schedule kind {kind!r}")


# (pcts, schedules as (start, end) pairs or (kind, start, end) curves, positions)
VALUE_CASES = (
    ([0.25, 0.5, 0.25], ((1., 2.), (10., 20.), (100., 300.)), [0.0, 0.1, 0.2, 0.25, 0.5, 0.6, 0.75, 0.875, 0.99, 1.0]),
    ((0.625, 0.375), ((-1., 1.), (5., 3.)), [0.0, 0.3, 0.625, 0.8, 1.0]),
    ([1.0], ((2., 4.),), [0.0, 0.5, 1.0]),
    # Boundaries that are not exact in float32 (0.3, 0.7): positions a hair on either side of each.
    ([0.3, 0.4, 0.3], ((1., 2.), (10., 20.), (100., 300.)),
     [0.0, 0.3 - 1e-9, 0.3 + 1e-9, 0.5, 0.7 - 1e-9, 0.7 + 1e-9, 0.9, 1.0]),
    ([0.5, 0.0, 0.5], ((1., 2.), (7., 8.), (10., 20.)), [0.25, 0.5, 0.75, 1.0]),
    ([0.1] * 10, tuple((float(i), i + 0.5) for i in range(10)), [0.0, 0.05, 0.55, 0.95, 1.0]),
    # Segments that are not straight lines: each is its schedule itself, not a line between its end values.
    ([0.4, 0.6], (("cos", 1., 3.), ("sq", 5., 1.)), [0.0, 0.1, 0.2, 0.3, 0.4, 0.55, 0.7, 0.85, 1.0]),
    # A sum within the contract's 1e-6 of 1 (here 1 + 5e-7) is accepted.
    ([0.3, 0.7 + 5e-7], ((1., 2.), (10., 20.)), [0.0, 0.15, 0.3, 0.65, 1.0]),
)
# The schedule of VALUE_CASES[0] asked in another order, each position twice: a plain function of pos gives the
# same values.
ORDER_CASE = 0
ORDER = (1.0, 0.6, 0.1, 0.875, 0.0, 0.5, 0.25, 0.99, 0.2, 0.75, 0.1, 1.0, 0.6, 0.0)
ERROR_CASES = (([0.3, 0.6], 2, "percentages that sum to 0.9"), ([0.5, 0.6], 2, "percentages that sum to 1.1"),
               ([1.2, -0.2], 2, "a negative percentage (the sum is 1)"), ([0.3, 0.7], 1, "two percentages and one schedule"),
               ([0.3, 0.7001], 2, "percentages that sum to 1.0001, more than 1e-6 from 1"),
               ([0.3, 0.69999], 2, "percentages that sum to 0.99999, more than 1e-6 from 1"))
LESSON_POSITIONS = (0.0, 0.15, 0.3, 0.3 + 0.7 * 0.25, 0.65, 0.9, 1.0)
RECORDED_EPOCHS = (1, 3)
TRAINING = dict(steps=30, bs=64, lr=0.1, seed=0)


def schedules(pairs) -> list:
    return [lin(*pair) if len(pair) == 2 else curve(*pair) for pair in pairs]


def _guarded(fn, *args):
    """fn(*args) with course_lib's combine_scheds refused, however it was reached: the function, a reference taken
    earlier, or a copy of its code (course_recorder.guard.refusing)."""
    from course_lib import schedulers

    return refusing(fn, (schedulers.combine_scheds,), "course_lib's combine_scheds")(*args)


def _values(rec, key: str, schedule, positions, guarded: bool = True) -> None:
    """The schedule's value at each position (with course_lib's combine_scheds refused, when `guarded`)."""
    for j, pos in enumerate(positions):
        rec.call(f"{key}/{j}", lambda p=pos: _number(_guarded(schedule, p) if guarded else schedule(p)))


def _number(value):
    """A schedule's value as a float (a one-element tensor is fine); anything else is recorded as it is."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def combine_values(combine_schedules) -> None:
    with recording("test_combine_values") as rec:
        for i, (pcts, pairs, positions) in enumerate(VALUE_CASES):
            schedule = rec.call(f"case{i}", _guarded, combine_schedules, pcts, schedules(pairs))
            if callable(schedule):
                _values(rec, f"case{i}", schedule, positions)
                if i == ORDER_CASE:
                    _values(rec, "order", schedule, ORDER)


def combine_errors(combine_schedules) -> None:
    with recording("test_combine_errors") as rec:
        for i, (pcts, n, _) in enumerate(ERROR_CASES):
            pairs = ((0., 1.), (1., 0.))[:n]
            rec.call(f"case{i}", lambda p=pcts, s=schedules(pairs): _guarded(lambda: combine_schedules(p, s)(0.5)))


def warmup_anneal_values(warmup_anneal, combine_schedules) -> None:
    """warmup_anneal is built with the student's own combine_schedules, whatever that does (Part A has its own
    tests, and the judge reads warmup_anneal's code for course_lib's combine_scheds)."""
    with recording("test_warmup_anneal_values") as rec:
        schedule = rec.call("schedule", warmup_anneal)
        if callable(schedule):
            _values(rec, "warmup", schedule, LESSON_POSITIONS, guarded=False)
            _values(rec, "warmup_again", schedule, LESSON_POSITIONS[::-1], guarded=False)  # asked again, backwards
        # The student's Part A on the lesson's schedule: when warmup_anneal is wrong, is Part A the cause?
        _lesson_combined(rec, combine_schedules, {"combine": LESSON_POSITIONS, "combine_again": LESSON_POSITIONS[::-1]})


def tiny_data(n_train: int = 40, bs: int = 8):
    from course_lib import DataBunch, Dataset, get_dls

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n_train, 12, generator=g), torch.randint(0, 3, (n_train,), generator=g)
    return DataBunch(*get_dls(Dataset(x, y), Dataset(x[:8], y[:8]), bs), c=3)


def lr_positions(epochs: int, iters: int = 5) -> list[float]:
    """Where a run of `epochs` epochs of `iters` batches samples the schedule: (epoch + batch / iters) / epochs."""
    return [(epoch + i / iters) / epochs for epoch in range(epochs) for i in range(iters)]


def _lesson_combined(rec, combine_schedules, positions: dict[str, list[float]]) -> None:
    """The student's Part A on the lesson's schedule at the given positions: when their warmup_anneal gives other
    learning rates, are these what it gave (Part A the cause)?"""
    if combine_schedules is None:
        return
    built = rec.call("combine", _guarded, combine_schedules, [0.3, 0.7], [lin(0.6, 2.0), lin(2.0, 0.1)])
    if callable(built):
        for key, where in positions.items():
            _values(rec, key, built, where)


def recorded_lrs(warmup_anneal, combine_schedules=None) -> None:
    from torch import nn

    from course_lib import ParamScheduler, Recorder, get_runner

    with recording("test_recorded_lr") as rec:
        for epochs in RECORDED_EPOCHS:
            def run(epochs=epochs):
                data = tiny_data()
                torch.manual_seed(0)
                learn, runner = get_runner(nn.Linear(12, 3), data, lr=0.01,
                                           cbs=[Recorder, partial(ParamScheduler, "lr", warmup_anneal())])
                runner.fit(epochs, learn)
                return [float(v) for v in runner.recorder.lrs[0]]

            rec.call(f"epochs{epochs}", run)
        _lesson_combined(rec, combine_schedules, {f"combine{e}": lr_positions(e) for e in RECORDED_EPOCHS})


def training_positions() -> list[float]:
    """The positions of the scheduled run's steps: step / steps."""
    return [step / TRAINING["steps"] for step in range(TRAINING["steps"])]


def scheduled_training(warmup_anneal, conv_layer, combine_schedules=None) -> None:
    """The lesson's CNN (the notebook's nn.BatchNorm2d block) trained with the student's schedule: lr at step k is
    schedule(k / steps); the learning rates and the losses are recorded."""
    with recording("test_scheduled_training") as rec:
        def run() -> list[float]:
            schedule = warmup_anneal()
            lrs = [float(schedule(pos)) for pos in training_positions()]
            rec.put("lrs", lrs)
            return training_run(lambda: cnn_of(conv_layer), init=False, lrs=lrs, **TRAINING)[1]

        rec.call("run", run)
        _lesson_combined(rec, combine_schedules, {"combine_steps": training_positions()})

# %% [markdown]
# # Q5 — Add a scheduler and train
#
# BatchNorm lets a network train at much higher learning rates (Ioffe & Szegedy 2015, §3.3; in Q3 the
# lesson's CNN without a norm diverged at the learning rate 1.0 that trained it with BatchNorm). The lesson
# pushed that further with a schedule: the learning rate first rises (a *warm-up*), then falls
# (*annealing*), each part a straight line, glued together by a function of its own.
#
# A schedule is a plain function of the position in training, `pos` from 0 (start) to 1 (end);
# `ParamScheduler` sets the learning rate from it before every training batch. Here you write
# the function that glues schedules together, use it for the lesson's schedule, check what the
# `Recorder` actually recorded, and train.

# %% [setup]
%matplotlib inline
from functools import partial
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from torch import nn

from course_lib import (AvgStatsCallback, BatchTransformXCallback, DeviceCallback, GeneralRelu, ParamScheduler,
                        ProgressCallback, Recorder, accuracy, get_learn_run, get_mnist_databunch, mnist_view,
                        sched_cos, sched_lin, set_seed)

data = get_mnist_databunch(bs=512)
nfs = [8, 16, 32, 64, 64]
# Statistics with accuracy, CUDA when present (CPU otherwise), and flat vectors reshaped to (1, 28, 28) images.
cbfs = [partial(AvgStatsCallback, accuracy), DeviceCallback, partial(BatchTransformXCallback, mnist_view)]


def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True, **kwargs) -> nn.Sequential:
    """The block from Q4: Conv2d (no bias when a norm follows) -> GeneralRelu(**kwargs) -> nn.BatchNorm2d."""
    layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn), GeneralRelu(**kwargs)]
    if bn:
        layers.append(nn.BatchNorm2d(nf, eps=1e-5, momentum=0.1))
    return nn.Sequential(*layers)

# %% [markdown]
# ## Part A (4 points) — combine schedules
#
# Write `combine_schedules(pcts, scheds)` (the lesson's `combine_scheds`, written by you; do not call
# `course_lib.combine_scheds`). The contract:
#
# - `pcts[i]` is the fraction of training that `scheds[i]` runs for. Segment `i` covers
#   `[start_i, start_i + pcts[i])` with `start_i = pcts[0] + ... + pcts[i-1]`.
# - Inside its segment, `scheds[i]` gets its **own** position from 0 to 1: the value at `pos` is
#   `scheds[i]((pos - start_i) / pcts[i])`, whatever the shape of `scheds[i]` (linear, cosine, anything else:
#   the segment is the given schedule itself, not a straight line between its end values).
# - A position exactly on a boundary belongs to the **later** segment (at its position 0);
#   `pos = 1` belongs to the last segment, at its position 1. A segment with `pcts[i] == 0` is never used.
# - Raise a `ValueError` with a message saying what is wrong when `pcts` and `scheds` have different
#   lengths, when a percentage is negative, or when the percentages do not sum to 1 (within `1e-6`:
#   ten times 0.1 is 0.9999999999999999 in floating point).
# - The schedule you return is a plain function of `pos`: the same position always gives the same value,
#   whatever was asked before (a `ParamScheduler` may use it for run after run).
#
# Work in Python floats (float32 tensors would put 0.3 a hair above 0.3).

# %% [solution id=combine_schedules]
def combine_schedules(pcts: Sequence[float], scheds: Sequence[Callable[[float], float]]) -> Callable[[float], float]:
    """A schedule of pos in [0, 1] that runs scheds[i] over a fraction pcts[i] of training (see the contract)."""
    ### BEGIN SOLUTION
    pcts = [float(p) for p in pcts]
    if len(pcts) != len(scheds):
        raise ValueError(f"need one schedule per percentage: got {len(pcts)} percentages and {len(scheds)} schedules")
    if any(p < 0 for p in pcts):
        raise ValueError(f"percentages must not be negative, got {pcts}")
    if abs(sum(pcts) - 1.0) > 1e-6:
        raise ValueError(f"percentages must sum to 1, got {pcts} (sum {sum(pcts)})")
    starts = [sum(pcts[:i]) for i in range(len(pcts))]

    def schedule(pos: float) -> float:
        if pos >= 1.0:
            return scheds[-1](1.0)
        # The last segment that has started (and has a length) is the active one.
        i = max(i for i in range(len(pcts)) if pcts[i] > 0 and pos >= starts[i])
        return scheds[i]((pos - starts[i]) / pcts[i])

    return schedule
    ### END SOLUTION

# %% [demo]
# Check that it does: two segments that do not join up show where each one starts.
demo = combine_schedules([0.25, 0.75], [sched_lin(1., 2.), sched_cos(4., 0.)])
positions = torch.linspace(0, 1, 201)
plt.plot(positions, [demo(float(p)) for p in positions])
plt.xlabel("position in training")
plt.show()

# %% [demo]
# NBVAL_CHECK_OUTPUT
# The values at the start, inside and at the end of each segment.
print([round(demo(p), 3) for p in (0.0, 0.125, 0.25, 0.625, 1.0)])

# %% [output]
# [1.0, 1.5, 4.0, 2.0, 0.0]

# %% [test id=test_combine_values points=3]
"""combine_schedules: values inside segments, on boundaries and at pos 1."""
from course_lib.checks import student_checks

with student_checks():
    sched = combine_schedules([0.3, 0.7], [sched_lin(0.6, 2.), sched_lin(2., 0.1)])
    assert abs(sched(0.0) - 0.6) < 1e-6, f"at pos=0 expected 0.6 (the first schedule at its position 0), got {sched(0.0)}"
    try:
        end = sched(1.0)
    except Exception as err:
        raise AssertionError(f"sched(1.0) raised {err!r}: pos 1 belongs to the last segment, at its position 1") from None
    assert abs(end - 0.1) < 1e-6, f"at pos=1 expected 0.1 (the last schedule at its position 1), got {end}"
    again = sched(0.0)
    assert abs(again - 0.6) < 1e-6, (
        f"asked again after pos=1, pos=0 gave {again} instead of 0.6: the schedule must be a plain function of pos, "
        f"keeping nothing between calls (a ParamScheduler may use it for run after run)")
    step = combine_schedules([0.5, 0.5], [sched_lin(1., 1.), sched_lin(5., 5.)])
    assert step(0.5) == 5.0, f"pos 0.5 is on the boundary: it belongs to the later segment (5.0); got {step(0.5)}"
    # pos 0.5 is 0.2 into the second segment, which lasts 0.7: that schedule runs at (0.5 - 0.3) / 0.7 = 2/7.
    middle = sched(0.5)
    assert abs(middle - (2.0 + (0.1 - 2.0) * 2 / 7)) < 1e-6, (
        f"at pos=0.5 expected sched_lin(2., 0.1)(2/7) = {2.0 + (0.1 - 2.0) * 2 / 7:.4f}: each segment's schedule gets the "
        f"position WITHIN its segment, (pos - start) / pct; got {middle}")
    assert abs(sched(0.15) - 1.3) < 1e-6, f"at pos=0.15 (half of the first 30 %) expected sched_lin(0.6, 2.)(0.5) = 1.3; got {sched(0.15)}"
    try:
        tenths = combine_schedules([0.1] * 10, [sched_lin(0., 1.)] * 10)
    except ValueError as err:
        raise AssertionError(f"ten percentages of 0.1 sum to 1 (in floating point to 0.9999999999999999: compare "
                             f"with a tolerance, not ==), but it raised ValueError: {err}") from None
    try:
        combine_schedules([0.3, 0.7 + 5e-7], [sched_lin(0., 1.), sched_lin(1., 0.)])
    except ValueError as err:
        raise AssertionError(f"percentages that sum to 1.0000005 are within the contract's 1e-6 of 1 and must be "
                             f"accepted, but it raised ValueError: {err}") from None
    # A cosine segment is the cosine itself: halfway through [0, 0.5), sched_cos(1., 3.) is at its own position 0.5, 2.0
    # (a straight line from 1 to 3 would be there too, so look a quarter in: sched_cos gives 1.2929, a line 1.5).
    curved = combine_schedules([0.5, 0.5], [sched_cos(1., 3.), sched_lin(3., 3.)])
    assert abs(curved(0.125) - 1.2929) < 1e-4, (
        f"at pos=0.125 expected sched_cos(1., 3.)(0.25) = 1.2929: each segment is its schedule itself, called at the "
        f"position within the segment (not a straight line between its end values); got {curved(0.125)}")
### BEGIN HIDDEN TESTS
from course_recorder import q5

q5.combine_values(combine_schedules)
### END HIDDEN TESTS

# %% [test id=test_combine_errors points=1]
"""combine_schedules: a ValueError with a message for impossible percentages."""
from course_lib.checks import student_checks

with student_checks():
    try:
        combine_schedules([0.3, 0.6], [sched_lin(0., 1.), sched_lin(1., 0.)])
    except ValueError:
        pass
    except Exception as err:
        raise AssertionError(f"percentages that sum to 0.9 should raise a ValueError, not {type(err).__name__}") from None
    else:
        raise AssertionError("percentages that sum to 0.9 should raise a ValueError; it raised nothing")
    try:
        combine_schedules([1.2, -0.2], [sched_lin(0., 1.), sched_lin(1., 0.)])
    except ValueError:
        pass
    except Exception as err:
        raise AssertionError(f"a negative percentage ([1.2, -0.2], which sums to 1) should raise a ValueError, not "
                             f"{type(err).__name__}: {err}") from None
    else:
        raise AssertionError("a negative percentage ([1.2, -0.2], which sums to 1) should raise a ValueError")
    try:
        combine_schedules([0.3, 0.7001], [sched_lin(0., 1.), sched_lin(1., 0.)])
    except ValueError:
        pass
    else:
        raise AssertionError("percentages that sum to 1.0001 are more than 1e-6 from 1 (the contract's tolerance): "
                             "expected a ValueError")
### BEGIN HIDDEN TESTS
from course_recorder import q5

q5.combine_errors(combine_schedules)
### END HIDDEN TESTS

# %% [markdown]
# ## Part B (3 points) — the lesson's schedule, in a real run
#
# Write `warmup_anneal()`: it returns the lesson's learning-rate schedule, built with your
# `combine_schedules` — linear from 0.6 to 2.0 over the first 30 % of training, then linear from 2.0 to
# 0.1 over the remaining 70 %. Positions are fractions of the whole training run (not epochs).

# %% [solution id=warmup_anneal]
def warmup_anneal() -> Callable[[float], float]:
    """The lesson's schedule: sched_lin(0.6, 2.) over 30 % of training, then sched_lin(2., 0.1) over 70 %."""
    ### BEGIN SOLUTION
    return combine_schedules([0.3, 0.7], [sched_lin(0.6, 2.), sched_lin(2., 0.1)])
    ### END SOLUTION

# %% [test id=test_warmup_anneal_values points=1]
"""warmup_anneal: 0.6 at the start, 2.0 after 30 %, 0.1 at the end, linear in between."""
from course_lib.checks import student_checks

with student_checks():
    sched = warmup_anneal()
    assert abs(sched(0.0) - 0.6) < 1e-6 and abs(sched(1.0) - 0.1) < 1e-6, (
        f"the schedule runs from 0.6 to 0.1 (warm up first: 0.6 -> 2.0, then anneal: 2.0 -> 0.1); got {sched(0.0)} and "
        f"{sched(1.0)}")
    assert abs(sched(0.3) - 2.0) < 1e-6, f"the peak, 2.0, comes after 30 % of training; at pos=0.3 got {sched(0.3)}"
    assert abs(sched(0.075) - 0.95) < 1e-6, (
        f"a quarter into the warm-up (pos=0.075) a LINEAR schedule from 0.6 to 2.0 is at 0.95; got {sched(0.075)}")
### BEGIN HIDDEN TESTS
from course_recorder import q5

q5.warmup_anneal_values(warmup_anneal, combine_schedules)
### END HIDDEN TESTS

# %% [test id=test_recorded_lr points=1]
"""The learning rate the Recorder records in a short run with ParamScheduler('lr', warmup_anneal())."""
torch.manual_seed(0)  # the same visible inputs on every run
from course_lib import DataBunch, Dataset, get_dls, get_runner
from course_lib.checks import student_checks

with student_checks():
    x, y = torch.randn(40, 12), torch.randint(0, 3, (40,))
    tiny = DataBunch(*get_dls(Dataset(x, y), Dataset(x[:8], y[:8]), 8), c=3)
    learn, run = get_runner(nn.Linear(12, 3), tiny, lr=0.01,
                            cbs=[Recorder, partial(ParamScheduler, "lr", warmup_anneal())])
    run.fit(2, learn)
    lrs = run.recorder.lrs[0]
    assert len(lrs) == 10, f"2 epochs of 5 batches should record 10 learning rates, got {len(lrs)}"
    assert abs(lrs[0] - 0.6) < 1e-6, f"the first batch should train at 0.6, recorded {lrs[0]}"
### BEGIN HIDDEN TESTS
from course_recorder import q5

q5.recorded_lrs(warmup_anneal, combine_schedules)
### END HIDDEN TESTS

# %% [test id=test_scheduled_training points=1]
"""Training the lesson's CNN with warmup_anneal() follows the reference schedule's loss curve."""
from course_lib.checks import student_checks

with student_checks():
    sched = warmup_anneal()
    assert all(0 < sched(p / 10) <= 2.0 for p in range(10)), "the learning rate stays in (0, 2] while training"
### BEGIN HIDDEN TESTS
from course_recorder import q5

q5.scheduled_training(warmup_anneal, conv_layer, combine_schedules)
### END HIDDEN TESTS

# %% [markdown]
# The lesson wrote the same schedule with its own `combine_scheds` and gave it to the runner as one more
# callback:
#
# ```python
# sched = combine_scheds([0.3, 0.7], [sched_lin(0.6, 2.), sched_lin(2., 0.1)])
# learn, run = get_learn_run(nfs, data, 0.9, conv_layer, cbs=cbfs + [partial(ParamScheduler, 'lr', sched)])
# ```
#
# (the learning rate given to `get_learn_run` is overwritten by the scheduler before the first batch).
#
# ## Train with the schedule and look at the learning rate
#
# The lesson trained 8 epochs with this schedule and reached about 98.8 % validation accuracy (on a GPU,
# with a plain ReLU: its 07 runs called `conv_layer` without `GeneralRelu`'s arguments; this course's block
# uses `GeneralRelu(leak=0.1, sub=0.4, maxv=6.)`). An epoch of full MNIST takes a few seconds on a laptop
# CPU, so we train the full 8 epochs. The left plot is the learning rate the `Recorder` recorded at every
# training batch (the schedule, sampled by the run), the right one the training loss of every batch, on a
# log scale; after each epoch the run prints the training and validation loss and accuracy.
#
# **Predict first** (not graded): before you run the next cell, write down in a line when you expect the
# validation accuracy to improve most — while the learning rate rises to 2.0 or while it falls to 0.1 —
# and whether the training loss will ever go up.

# %% [experiment]
set_seed(42)
sched = warmup_anneal()
learn, run = get_learn_run(nfs, data, 0.6, conv_layer, leak=0.1, sub=0.4, maxv=6.,
                           cbs=cbfs + [Recorder, partial(ParamScheduler, "lr", sched), ProgressCallback])
run.fit(8, learn)
print(f"validation accuracy after 8 epochs: {run.avg_stats.history[-1]['valid_accuracy']:.3f}")
fig, (ax_lr, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.5))
run.recorder.plot_lr(ax=ax_lr)
run.recorder.plot_loss(ax=ax_loss)
ax_loss.set_yscale("log")
plt.show()

# %% [markdown]
# ## Part C (2 points) — what your run shows
#
# Answer from your own printout and plots (quote the numbers you use):
#
# 1. How does the validation accuracy behave while the learning rate rises to its peak (the first 30 % of
#    training, about 2.4 of the 8 epochs), and while it is annealed down to 0.1?
# 2. Why would a schedule start lower than its peak and end with a small learning rate?

# %% [answer id=q5_schedule_reading points=2]
# **What the run shows** (the notebook's run on the full data, on a CPU; `bench/measure_q3_q5_runs.py`
# prints the same figures). The learning rate peaks at 2.0 at batch 236 of 784, in the third epoch. While
# it rises, the validation accuracy stalls: 0.969, 0.964, 0.969 after epochs 1, 2 and 3 (it even drops in
# epoch 2), and the training loss jumps back up for a few batches around batch 155 (to about 0.3, where it
# had been below 0.1). Once the learning rate falls the accuracy improves every epoch: 0.982, 0.986, 0.988,
# 0.989, 0.989, and the training loss falls by more than an order of magnitude (0.178 on average over the
# first quarter of the batches, 0.008 over the last). The lesson's GPU run showed the same
# pattern more strongly: 0.839 and 0.851 after epochs 1 and 2, then up to 0.988.
#
# **Why.** A large learning rate takes large, noisy steps: it moves the weights fast, but it cannot settle
# into a minimum, so the loss bounces (each step's size is proportional to the learning rate); lowering it
# at the end lets SGD settle, and that is when the accuracy climbs. The warm-up starts lower because large
# steps do most harm at the start, when "the network is changing rapidly": Goyal et al. (2017, §2.2) found
# that their high learning rates needed "a strategy of using less aggressive learning rates at the start of
# training" (a gradual warm-up). BatchNorm is what lets this network train at such rates at all (Q3).
#
# **Mark scheme**
# - 1 point: an honest reading of the student's own run: the validation accuracy stalls, dips or grows
#   slowly while the learning rate is high, and improves steadily while it is annealed, ending best (accept
#   their own numbers; a GPU run differs a little; if their run shows something else, an accurate report of
#   it gets the point). No number from their printout, or a reading it contradicts, gets 0.
# - 1 point: large learning rates make fast but noisy progress and cannot settle; a small final learning
#   rate lets the weights settle into a minimum; the warm-up avoids large steps from the random
#   initialisation (either reason for the warm-up is enough).

"""What the per-example normalizations (Q6 LayerNorm, Q7 InstanceNorm, Q8 GroupNorm) share: their reference math,
the wrong variants of it, and the checks of properties that compare the student's own outputs."""

from __future__ import annotations

import torch

from course_judge.compare import close, expect_no_error, tensor
from course_judge.records import Fail, Records

Tensor = torch.Tensor


def normalise(x: Tensor, axes: tuple[int, ...], eps: float, *, unbiased: bool = False, eps_outside: bool = False,
              center: bool = True) -> Tensor:
    """(x - mean) / sqrt(var + eps) over `axes`, or one of its catalogued wrong variants."""
    mean = x.mean(axes, keepdim=True)
    n = 1
    for axis in axes:
        n *= x.shape[axis]
    var = ((x - mean) ** 2).sum(axes, keepdim=True) / (n - 1 if unbiased else n)
    centred = x - mean if center else x
    return centred / (var.sqrt() + eps if eps_outside else (var + eps).sqrt())


def dropped_keepdim(x: Tensor, axes: tuple[int, ...], eps: float) -> Tensor:
    """The statistics reduced without keepdim=True, so they broadcast against the LAST dimensions of x."""
    mean = x.mean(axes)
    var = x.var(axes, correction=0)
    return (x - mean) / (var + eps).sqrt()


def distinguishable(mistakes: dict[str, Tensor], right: Tensor) -> dict[str, Tensor]:
    """Only the mistakes whose output differs from the right one (eps misuse is invisible when eps=1e-5)."""
    return {k: v for k, v in mistakes.items() if not close(v, right, 1e-6, 1e-5)}


def expect_no_buffers(buffers: object, name: str) -> None:
    """A per-example normalization has nothing to remember between batches."""
    if buffers:
        raise Fail(f"{name} has buffers {buffers}: it normalises every example with that example's own statistics, in "
                   f"training and in eval, so it keeps no running statistics")


def _out(r: Records, key: str, what: str) -> Tensor:
    return tensor(expect_no_error(r.get(key), what), what)


def expect_examples_independent(r: Records, key: str, x: Tensor, name: str) -> None:
    """Each example's recorded output alone equals its output inside the batch (probes.independence)."""
    whole = _out(r, f"{key}/whole", f"{name} on a batch of shape {tuple(x.shape)}")
    for i in range(x.shape[0]):
        alone = _out(r, f"{key}/alone{i}", f"{name} on example {i} alone")
        if not close(alone, whole[i:i + 1], 1e-10, 1e-8):
            raise Fail(f"{name}: example {i} of a batch of shape {tuple(x.shape)} gives a different output on its own "
                       f"(a batch of 1) than inside the batch: its statistics must come from that example alone, not "
                       f"from the batch")
    changed = _out(r, f"{key}/changed", f"{name} on a batch with the other examples changed")
    if not close(changed[:1], whole[:1], 1e-10, 1e-8):
        raise Fail(f"{name}: changing the other examples of the batch changed example 0's output: its statistics must "
                   f"come from that example alone")


def expect_train_equals_eval(r: Records, key: str, x: Tensor, name: str) -> None:
    """Training- and eval-mode outputs (after training forwards, with and without grad mode) are the same."""
    for warmup in range(3):
        expect_no_error(r.get(f"{key}/warmup{warmup}"), f"{name} in training mode")
    train = _out(r, f"{key}/train", f"{name} in training mode")
    eval_ = _out(r, f"{key}/eval", f"{name} in eval mode")
    no_grad = _out(r, f"{key}/eval_no_grad", f"{name} in eval mode under torch.no_grad()")
    if not close(train, eval_, 1e-12, 1e-10):
        raise Fail(f"{name}: the eval-mode output differs from the training-mode output on the same input (input shape "
                   f"{tuple(x.shape)}): this normalization uses each example's own statistics in both modes and keeps "
                   f"no running statistics")
    if not close(eval_, no_grad, 1e-12, 1e-10):
        raise Fail(f"{name}: the output changes under torch.no_grad(): it must not depend on grad mode")
    expect_no_buffers(r.get(f"{key}/buffers"), name)

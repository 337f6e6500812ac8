"""Hidden-test helpers for Q6 (LayerNorm), also used by Q7 (InstanceNorm): the catalogued wrong outputs,
setting the affine parameters, gradient checks and independence checks.

The oracles (F.layer_norm, F.instance_norm) are called in the test cells on values the tests build;
this module only builds what each known mistake gives on the same input, so a failure can name it.
"""

from __future__ import annotations

import torch
from torch import nn

from course_grading.checks import call_own, close, own_implementation

Tensor = torch.Tensor
LN_AXES = (1, 2, 3)  # LayerNorm of conv activations: every channel and position of one example


def normalise(x: Tensor, axes: tuple[int, ...], eps: float, *, unbiased: bool = False,
              eps_outside: bool = False, center: bool = True) -> Tensor:
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


def ln_mistakes(x: Tensor, mult: float, add: float, eps: float) -> dict[str, Tensor]:
    """What LayerNorm(eps) with scalar mult and add returns on x under each known mistake."""

    def affine(t: Tensor) -> Tensor:
        return t * mult + add

    over = "you computed the statistics over the wrong axes: "
    wanted = " LayerNorm uses one mean and variance per example, over dims (1, 2, 3) = (C, H, W)."
    found = {
        "you normalised with the unbiased variance (divide by n-1); the contract says the biased variance "
        "(divide by n = C*H*W).": affine(normalise(x, LN_AXES, eps, unbiased=True)),
        "you put eps outside the square root (or added it to the standard deviation): divide by "
        "sqrt(var + eps), not by sqrt(var) + eps.": affine(normalise(x, LN_AXES, eps, eps_outside=True)),
        "you left out eps: divide by sqrt(var + eps).": affine(normalise(x, LN_AXES, 0.0)),
        over + "over (2, 3), per example AND channel (that is InstanceNorm)." + wanted:
            affine(normalise(x, (2, 3), eps)),
        over + "over (0, 2, 3), per channel across the batch (that is BatchNorm)." + wanted:
            affine(normalise(x, (0, 2, 3), eps)),
        over + "over the whole batch (0, 1, 2, 3)." + wanted: affine(normalise(x, (0, 1, 2, 3), eps)),
        over + "over (1,), the channels only." + wanted: affine(normalise(x, (1,), eps)),
        "you applied mult and add BEFORE normalising: normalise x first, then multiply by mult and add add.":
            normalise(x * mult + add, LN_AXES, eps),
        "you did not subtract the mean: the normalised value is (x - mean) / sqrt(var + eps).":
            affine(normalise(x, LN_AXES, eps, center=False)),
        "you left out the scale and shift: multiply by mult and add add.": normalise(x, LN_AXES, eps),
        "you swapped the scale and the shift: the output must be x_hat * mult + add.":
            normalise(x, LN_AXES, eps) * add + mult,
    }
    if x.shape[-1] == x.shape[0]:  # only then does a dropped keepdim broadcast instead of raising
        found["you reduced without keepdim=True, so the per-example mean and variance (shape (N,)) broadcast "
              "against the last dimension (W) instead of the examples: use keepdim=True (shape (N, 1, 1, 1))."] = (
            affine(dropped_keepdim(x, LN_AXES, eps)))
    return distinguishable(found, affine(normalise(x, LN_AXES, eps)))


def distinguishable(mistakes: dict[str, Tensor], right: Tensor) -> dict[str, Tensor]:
    """Only the mistakes whose output differs from the right one (e.g. eps misuse is invisible when eps=1e-5)."""
    return {k: v for k, v in mistakes.items() if not close(v, right, 1e-6, 1e-5)}


def set_scalar_affine(layer: nn.Module, mult: float, add: float) -> None:
    """Set LayerNorm's mult and add, checking they are 0-dim nn.Parameters first."""
    for name, value in (("mult", mult), ("add", add)):
        param = getattr(layer, name, None)
        if not isinstance(param, nn.Parameter):
            raise AssertionError(f"LayerNorm.{name} must be an nn.Parameter holding one number; got {type(param).__name__}")
        if param.dim() != 0:
            raise AssertionError(f"LayerNorm.{name} must be a single learned number, a 0-dim tensor of shape (); "
                                 f"got shape {tuple(param.shape)} (one value per channel is InstanceNorm's and "
                                 f"BatchNorm's affine, not this LayerNorm's)")
        with torch.no_grad():
            param.fill_(value)


def expect_no_buffers(layer: nn.Module, name: str) -> None:
    """A per-example normalization has nothing to remember between batches: no buffers at all."""
    buffers = sorted(n for n, _ in layer.named_buffers())
    if buffers:
        raise AssertionError(f"{name} has buffers {buffers}: it normalises every example with that example's own "
                             f"statistics, in training and in eval, so it keeps no running statistics")


def expect_train_equals_eval(layer: nn.Module, x: Tensor, name: str) -> None:
    """The same output in training and eval mode, after several training forwards, with and without grad mode."""
    layer.train()
    for seed in range(3):  # a layer that (wrongly) keeps running statistics would update them here
        call_own(layer, x * (seed + 1) + seed)
    train_out = call_own(layer, x)
    layer.eval()
    eval_out = call_own(layer, x)
    with torch.no_grad():
        eval_no_grad = call_own(layer, x)
    layer.train()
    if not close(train_out, eval_out, 1e-12, 1e-10):
        raise AssertionError(f"{name}: the eval-mode output differs from the training-mode output on the same input "
                             f"(input shape {tuple(x.shape)}): this normalization uses each example's own "
                             f"statistics in both modes; it must not keep or use running statistics")
    if not close(eval_out, eval_no_grad, 1e-12, 1e-10):
        raise AssertionError(f"{name}: the output changes under torch.no_grad(): it must not depend on grad mode")


def expect_examples_independent(layer: nn.Module, x: Tensor, name: str) -> None:
    """Each example's output is the output of that example alone, whatever the rest of the batch holds."""
    whole = call_own(layer, x)
    for i in range(x.shape[0]):
        alone = call_own(layer, x[i:i + 1])
        if not close(alone, whole[i:i + 1], 1e-10, 1e-8):
            raise AssertionError(f"{name}: example {i} of a batch of shape {tuple(x.shape)} gives a different output "
                                 f"on its own (a batch of 1) than inside the batch: its statistics must come from "
                                 f"that example alone, not from the batch")
    changed = x.clone()
    changed[1:] = changed[1:] * 3 - 5
    if not close(call_own(layer, changed)[0], whole[0], 1e-10, 1e-8):
        raise AssertionError(f"{name}: changing the other examples of the batch changed example 0's output: "
                             f"its statistics must come from that example alone")


def gradcheck_params(layer: nn.Module, x: Tensor, params: dict[str, Tensor], name: str) -> None:
    """torch.autograd.gradcheck of the output w.r.t. the input and each named parameter, one at a time."""
    names = ["x", *params]

    def output(*values: Tensor) -> Tensor:
        return torch.func.functional_call(layer, dict(zip(names[1:], values[1:])), (values[0],))

    labels = {"x": "the input x", **{p: p for p in params}}
    for i, key in enumerate(names):
        args = [t.detach().clone().requires_grad_(j == i) for j, t in enumerate((x, *params.values()))]
        try:
            with own_implementation(name):
                ok = torch.autograd.gradcheck(output, tuple(args), eps=1e-6, atol=1e-7, rtol=1e-5,
                                              raise_exception=False)
        except AssertionError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure of the student's layer is a failed check
            if type(err).__name__ == "DelegationError":
                raise AssertionError(str(err)) from None
            raise AssertionError(f"{name}: computing the gradient with respect to {labels[key]} failed: "
                                 f"{type(err).__name__}: {err}") from None
        if not ok:
            hint = (" Keep the mean and variance inside the autograd graph (do not detach them or compute them "
                    "under torch.no_grad())." if i == 0 else "")
            raise AssertionError(f"{name} ({'training' if layer.training else 'eval'} mode): the gradient with "
                                 f"respect to {labels[key]} does not match finite differences "
                                 f"(torch.autograd.gradcheck, float64).{hint}")


"""Hidden-test helpers for Q8 (GroupNorm): torch's own layer as the oracle, the known wrong outputs,
affine set-up, gradients, errors and a delegation guard for training.

The oracle is nn.GroupNorm, built here on values the tests choose; the mistakes are what each
catalogued error would return on the same input, so a failure can say which mistake was made.
"""

from __future__ import annotations

import torch
from torch import nn

from course_grading.checks import DelegationError, close, own_implementation

Tensor = torch.Tensor


def channel_view(t: Tensor, ndim: int) -> Tensor:
    """(C,) -> (1, C, 1, ...), for broadcasting against an input with ndim dimensions."""
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def torch_group_norm(x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """nn.GroupNorm's output on x with the given per-channel weight and bias (None: affine=False)."""
    layer = nn.GroupNorm(num_groups, x.shape[1], eps=eps, affine=weight is not None).to(x.dtype)
    if weight is not None:
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
    with torch.no_grad():
        return layer(x)


def set_affine(layer: nn.Module, weight: Tensor, bias: Tensor, num_groups: int) -> None:
    """Copy per-channel weight and bias (shape (C,)) into the layer, checking they are per-channel Parameters."""
    channels = len(weight)
    for name, value in (("weight", weight), ("bias", bias)):
        param = getattr(layer, name, None)
        if not isinstance(param, nn.Parameter):
            raise AssertionError(f"GroupNorm.{name} must be an nn.Parameter of shape ({channels},) when affine=True; "
                                 f"got {type(param).__name__}")
        if tuple(param.shape) != (channels,):
            extra = ""
            if param.numel() == num_groups and num_groups != channels:
                extra = (" You made one value per group; GroupNorm's weight and bias are per CHANNEL "
                         "(as in nn.GroupNorm), although its statistics are per group.")
            raise AssertionError(f"GroupNorm({num_groups}, {channels}).{name} must have shape ({channels},); "
                                 f"got {tuple(param.shape)}.{extra}")
        with torch.no_grad():
            param.copy_(value)


def _normalise(x: Tensor, grouped: Tensor, axes: tuple[int, ...], eps: float, unbiased: bool = False,
               eps_outside: bool = False) -> Tensor:
    """Normalise `grouped` (a view of x) over `axes` and return it in x's shape."""
    mean = grouped.mean(axes, keepdim=True)
    var = grouped.var(axes, keepdim=True, correction=1 if unbiased else 0)
    scale = torch.sqrt(var) + eps if eps_outside else torch.sqrt(var + eps)
    return ((grouped - mean) / scale).reshape(x.shape)


def interleaved(x: Tensor, num_groups: int, eps: float) -> Tensor:
    """Normalised with channel c in group c % num_groups (a strided grouping), no affine."""
    n, c = x.shape[:2]
    return _normalise(x, x.reshape(n, c // num_groups, num_groups, -1), (1, 3), eps)


def output_mistakes(x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None,
                    eps: float) -> dict[str, Tensor]:
    """What GroupNorm returns on x under each known mistake (weight None: affine=False)."""
    n, c = x.shape[:2]
    g = channel_view(weight, x.dim()) if weight is not None else torch.ones((), dtype=x.dtype)
    b = channel_view(bias, x.dim()) if bias is not None else torch.zeros((), dtype=x.dtype)
    groups = x.reshape(n, num_groups, -1)
    right = _normalise(x, groups, (2,), eps)
    mistakes = {
        "you grouped the channels with a stride (channel c in group c % num_groups, as x.view(N, C // G, G, ...) "
        "does); groups are CONTIGUOUS: channels 0..C/G-1 form group 0, the next C/G group 1, and so on "
        "(x.view(N, G, C // G, ...)).": interleaved(x, num_groups, eps) * g + b,
        "you normalised with the unbiased variance (divide by n-1); the contract says the biased variance "
        "(divide by the number of values in the group), as nn.GroupNorm does.":
            _normalise(x, groups, (2,), eps, unbiased=True) * g + b,
        "you put eps outside the square root: divide by sqrt(var + eps), not by sqrt(var) + eps.":
            _normalise(x, groups, (2,), eps, eps_outside=True) * g + b,
        "you left out eps: divide by sqrt(var + eps).": _normalise(x, groups, (2,), 0.0) * g + b,
        "you computed the statistics over the batch too (one mean per group for all examples); GroupNorm's "
        "statistics are per example AND group.": _normalise(x, groups, (0, 2), eps) * g + b,
        "your reshape mixes examples (x.view(G, -1) or similar puts values of different examples in one "
        "group); reshape to (N, G, -1) so that every row is one example's group.":
            _normalise(x, x.reshape(num_groups, -1), (1,), eps) * g + b,
    }
    if weight is not None:
        mistakes["you swapped the scale and the shift: the output must be x_hat * weight + bias."] = (
            right * channel_view(bias, x.dim()) + channel_view(weight, x.dim()))
        mistakes["you left out the scale and shift: multiply by weight and add bias (per channel)."] = right
    # A mistake that gives the right answer on this input (a stride with one group, eps left out when eps
    # is tiny) must not be named: expect_close compares mistakes with a looser tolerance.
    right = right * g + b
    return {text: wrong for text, wrong in mistakes.items() if not close(wrong, right, atol=1e-6, rtol=1e-5)}


def gradcheck_own(layer: nn.Module, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> None:
    """torch.autograd.gradcheck of the output w.r.t. the input and (when given) weight and bias, one at a time."""
    inputs = [x] + ([weight, bias] if weight is not None else [])
    names = ("the input x", "weight (the scale)", "bias (the shift)")

    def output(*args: Tensor) -> Tensor:
        if weight is None:
            return layer(args[0])
        return torch.func.functional_call(layer, {"weight": args[1], "bias": args[2]}, (args[0],))

    for i in range(len(inputs)):
        args = [t.detach().clone().requires_grad_(j == i) for j, t in enumerate(inputs)]
        try:
            with own_implementation("GroupNorm"):
                ok = torch.autograd.gradcheck(output, tuple(args), eps=1e-6, atol=1e-7, rtol=1e-5,
                                              raise_exception=False)
        except AssertionError:
            raise
        except DelegationError as err:
            raise AssertionError(str(err)) from None
        except Exception as err:  # noqa: BLE001 - any failure of the student's layer is a failed check
            raise AssertionError(f"computing the gradient with respect to {names[i]} failed: "
                                 f"{type(err).__name__}: {err}") from None
        if not ok:
            hint = (" Keep the group means and variances inside the autograd graph (do not detach them)."
                    if i == 0 else "")
            raise AssertionError(f"the gradient with respect to {names[i]} does not match finite differences "
                                 f"(torch.autograd.gradcheck, float64, {layer.training and 'train' or 'eval'} mode)."
                                 f"{hint}")


def guard_own(model: nn.Module, cls: type, name: str = "GroupNorm") -> nn.Module:
    """Make every `cls` layer in model refuse torch's own normalization while it runs its forward."""
    found = 0
    for module in model.modules():
        if isinstance(module, cls):
            found += 1
            forward = module.forward

            def guarded(*args, _forward=forward, **kwargs):
                with own_implementation(name):
                    return _forward(*args, **kwargs)

            module.forward = guarded
    if not found:
        raise AssertionError(f"the model built for the training check contains no {name} layer")
    return model

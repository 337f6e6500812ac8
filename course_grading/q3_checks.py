"""Hidden-test helpers for Q3 (BatchNorm): the known wrong outputs, affine set-up, gradients, errors.

The oracles themselves (F.batch_norm) are called in the test cells, on values the tests build; this
module only builds what each catalogued mistake would give on the same input, so a failure can say
which mistake was made.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from course_grading.checks import own_implementation

Tensor = torch.Tensor
AXES = (0, 2, 3)  # BatchNorm's statistics: every example and position, one value per channel


def channel_view(t: Tensor) -> Tensor:
    """(C,) -> (1, C, 1, 1), for broadcasting against (N, C, H, W)."""
    return t.reshape(1, -1, 1, 1)


def set_affine(layer: nn.Module, gamma: Tensor, beta: Tensor) -> None:
    """Copy gamma and beta (shape (C,)) into layer.mults and layer.adds, checking their shapes first."""
    for name, value in (("mults", gamma), ("adds", beta)):
        param = getattr(layer, name, None)
        if not isinstance(param, nn.Parameter):
            raise AssertionError(f"BatchNorm.{name} must be an nn.Parameter of shape ({len(value)}, 1, 1); "
                                 f"got {type(param).__name__}")
        if tuple(param.shape) != (len(value), 1, 1):
            raise AssertionError(f"BatchNorm.{name} must have shape ({len(value)}, 1, 1) (one value per channel); "
                                 f"got {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(value.reshape(-1, 1, 1))


def set_running(layer: nn.Module, means: Tensor, variances: Tensor) -> None:
    """Copy running statistics (shape (C,)) into the buffers layer.means and layer.vars."""
    for name, value in (("means", means), ("vars", variances)):
        buf = getattr(layer, name, None)
        if name not in dict(layer.named_buffers()) or buf is None:
            raise AssertionError(f"BatchNorm.{name} must be a registered buffer (self.register_buffer)")
        if tuple(buf.shape) != (1, len(value), 1, 1):
            raise AssertionError(f"BatchNorm.{name} must have shape (1, {len(value)}, 1, 1); got {tuple(buf.shape)}")
        with torch.no_grad():
            buf.copy_(channel_view(value))


def batch_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel mean, biased variance and unbiased variance, each (1, C, 1, 1)."""
    mean = x.mean(AXES, keepdim=True)
    biased = ((x - mean) ** 2).mean(AXES, keepdim=True)
    n = x.numel() // x.shape[1]
    return mean, biased, biased * n / (n - 1)


def train_mistakes(x: Tensor, gamma: Tensor, beta: Tensor, eps: float, mom: float) -> dict[str, Tensor]:
    """What a training-mode forward from fresh buffers returns under each known mistake."""
    g, b = channel_view(gamma), channel_view(beta)
    mean, biased, unbiased = batch_stats(x)

    def over(axes: tuple[int, ...]) -> Tensor:
        m = x.mean(axes, keepdim=True)
        v = ((x - m) ** 2).mean(axes, keepdim=True)
        return (x - m) / torch.sqrt(v + eps) * g + b

    xhat = (x - mean) / torch.sqrt(biased + eps)
    return {
        "you normalised with the unbiased variance (divide by n-1); the contract says the biased variance "
        "(divide by n = N*H*W) for the output, as nn.BatchNorm2d does (the unbiased one is only stored).":
            (x - mean) / torch.sqrt(unbiased + eps) * g + b,
        "you put eps outside the square root: divide by sqrt(var + eps), not by sqrt(var) + eps.":
            (x - mean) / (torch.sqrt(biased) + eps) * g + b,
        "you left out eps: divide by sqrt(var + eps).": (x - mean) / torch.sqrt(biased) * g + b,
        "you computed the statistics over the wrong axes: over the batch dimension (0,) only; BatchNorm "
        "reduces over axes (0, 2, 3), one mean and variance per channel.": over((0,)),
        "you computed the statistics over the wrong axes: over (2, 3), per example and channel (that is "
        "InstanceNorm); BatchNorm reduces over axes (0, 2, 3).": over((2, 3)),
        "you computed the statistics over the wrong axes: over (1, 2, 3), per example (that is LayerNorm); "
        "BatchNorm reduces over axes (0, 2, 3).": over((1, 2, 3)),
        "you computed the statistics over the wrong axes: over all of them, one mean for every channel; "
        "BatchNorm reduces over axes (0, 2, 3), per channel.": over((0, 1, 2, 3)),
        "you normalised with the running statistics in training mode (before updating them); training mode "
        "normalises with the batch's own mean and variance.": x / (1 + eps) ** 0.5 * g + b,
        "you normalised with the running statistics in training mode (after updating them); training mode "
        "normalises with the batch's own mean and variance.":
            (x - mom * mean) / torch.sqrt(1 - mom + mom * unbiased + eps) * g + b,
        "you swapped the scale and the shift: the output must be x_hat * mults + adds.": xhat * b + g,
        "you left out the scale and shift: multiply by mults and add adds.": xhat,
    }


def eval_mistakes(x: Tensor, means: Tensor, variances: Tensor, gamma: Tensor, beta: Tensor,
                  eps: float) -> dict[str, Tensor]:
    """What an eval-mode forward with the given running statistics returns under each known mistake."""
    g, b = channel_view(gamma), channel_view(beta)
    rm, rv = channel_view(means), channel_view(variances)
    mean, biased, unbiased = batch_stats(x)
    return {
        "you normalised with the batch's own statistics in eval mode; eval mode must use the running "
        "statistics (the buffers means and vars).": (x - mean) / torch.sqrt(biased + eps) * g + b,
        "you normalised with the batch's own (unbiased) statistics in eval mode; eval mode must use the "
        "running statistics (the buffers means and vars).": (x - mean) / torch.sqrt(unbiased + eps) * g + b,
        "you put eps outside the square root: divide by sqrt(vars + eps), not by sqrt(vars) + eps.":
            (x - rm) / (torch.sqrt(rv) + eps) * g + b,
        "you divided by the running variance instead of its square root: divide by sqrt(vars + eps).":
            (x - rm) / (rv + eps) * g + b,
        "you swapped the scale and the shift: the output must be x_hat * mults + adds.":
            (x - rm) / torch.sqrt(rv + eps) * b + g,
    }


def fresh_eval_mistakes(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> dict[str, Tensor]:
    """What an untrained layer in eval mode returns under each known mistake (buffers at their start values)."""
    g, b = channel_view(gamma), channel_view(beta)
    mean, biased, _ = batch_stats(x)
    return {
        "you initialised the running variance to 0; vars must start as ones (and means as zeros), so an "
        "untrained layer in eval mode returns x / sqrt(1 + eps) * mults + adds.": x / eps ** 0.5 * g + b,
        "you normalised with the batch's own statistics in eval mode; eval mode must use the running "
        "statistics (the buffers means and vars).": (x - mean) / torch.sqrt(biased + eps) * g + b,
    }


def running_after(x: Tensor, mom: float, steps: int) -> dict[str, tuple[Tensor, Tensor]]:
    """Running (means, vars) after `steps` training forwards of the same batch from fresh buffers: right and wrong."""
    mean, biased, unbiased = batch_stats(x)
    kept = (1 - mom) ** steps  # the weight the initial value still has after `steps` updates
    kept_flipped = mom ** steps

    def closed(keep: float, var: Tensor) -> tuple[Tensor, Tensor]:
        return (1 - keep) * mean, keep + (1 - keep) * var

    return {
        "right": closed(kept, unbiased),
        "you flipped the momentum: mom is the weight of the NEW batch, running = (1 - mom) * running + "
        "mom * batch (PyTorch's rule), not mom * running + (1 - mom) * batch.": closed(kept_flipped, unbiased),
        "you stored the biased variance in the running variance; the contract (and nn.BatchNorm2d) stores "
        "the unbiased one (divide by n-1), while normalising with the biased one.": closed(kept, biased),
        "you stored the standard deviation, not the variance, in the running variance.": closed(kept, unbiased.sqrt()),
        "you did not update the running statistics in training mode.": (torch.zeros_like(mean), torch.ones_like(mean)),
    }


def running_mistakes(x: Tensor, mom: float, steps: int, which: int) -> dict[str, Tensor]:
    """The wrong running means (which=0) or vars (which=1), keyed by mistake, for expect_close."""
    return {k: v[which] for k, v in running_after(x, mom, steps).items() if k != "right"}


def gradcheck_own(layer: nn.Module, x: Tensor, gamma: Tensor, beta: Tensor) -> None:
    """torch.autograd.gradcheck of the training-mode output w.r.t. the input, mults and adds, one at a time."""

    def output(x_: Tensor, g_: Tensor, b_: Tensor) -> Tensor:
        return torch.func.functional_call(layer, {"mults": g_.reshape(-1, 1, 1), "adds": b_.reshape(-1, 1, 1)}, (x_,))

    names = ("the input x", "mults (the scale)", "adds (the shift)")
    for i, name in enumerate(names):
        args = [t.detach().clone().requires_grad_(j == i) for j, t in enumerate((x, gamma, beta))]
        try:
            with own_implementation("BatchNorm"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a deprecation warning on stderr would zero the test cell
                ok = torch.autograd.gradcheck(output, tuple(args), eps=1e-6, atol=1e-7, rtol=1e-5,
                                              raise_exception=False)
        except AssertionError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure of the student's layer is a failed check
            if type(err).__name__ == "DelegationError":
                raise AssertionError(str(err)) from None
            raise AssertionError(f"computing the gradient with respect to {name} failed: "
                                 f"{type(err).__name__}: {err}") from None
        if not ok:
            hint = (" Keep the batch mean and variance inside the autograd graph (do not detach them or compute "
                    "them under torch.no_grad()); only the update of the running statistics is free of history."
                    if i == 0 else "")
            raise AssertionError(f"the training-mode gradient with respect to {name} does not match finite "
                                 f"differences (torch.autograd.gradcheck, float64).{hint}")


def in_float64(make_model: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """A model factory whose model runs in float64 (inputs cast on the way in).

    In float32 the paired comparison is chaotic at lr 1.0: channels whose batch variance is almost 0
    get divided by sqrt(eps), which magnifies the rounding differences between two correct ways of
    writing the same formula until the loss curves part. In float64 those differences stay ~1e-12.
    """

    def make() -> nn.Module:
        from course_lib import Lambda

        return nn.Sequential(Lambda(lambda x: x.double()), make_model().double())

    return make

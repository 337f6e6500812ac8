"""Hidden-test helpers for Q7 (InstanceNorm): the catalogued wrong outputs and setting the affine parameters.

The generic pieces (normalise, independence, gradcheck, errors) live in q6_checks; the oracle
(F.instance_norm) is called in the test cells on values the tests build.
"""

from __future__ import annotations

import torch
from torch import nn

from course_grading.q6_checks import distinguishable, dropped_keepdim, normalise

Tensor = torch.Tensor
IN_AXES = (2, 3)  # InstanceNorm: every position of one channel of one example


def channel_view(t: Tensor) -> Tensor:
    """(C,) -> (1, C, 1, 1), for broadcasting against (N, C, H, W)."""
    return t.reshape(1, -1, 1, 1)


def in_mistakes(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> dict[str, Tensor]:
    """What InstanceNorm(nf, eps) with per-channel mults=gamma and adds=beta returns under each known mistake."""
    g, b = channel_view(gamma), channel_view(beta)

    def affine(t: Tensor) -> Tensor:
        return t * g + b

    over = "you computed the statistics over the wrong axes: "
    wanted = " InstanceNorm uses one mean and variance per example AND channel, over dims (2, 3) = (H, W)."
    found = {
        "you normalised with the unbiased variance (divide by n-1); the contract says the biased variance "
        "(divide by n = H*W).": affine(normalise(x, IN_AXES, eps, unbiased=True)),
        "you put eps outside the square root (or added it to the standard deviation): divide by "
        "sqrt(var + eps), not by sqrt(var) + eps.": affine(normalise(x, IN_AXES, eps, eps_outside=True)),
        "you left out eps: divide by sqrt(var + eps).": affine(normalise(x, IN_AXES, 0.0)),
        over + "over (0, 2, 3), per channel across the batch (that is BatchNorm)." + wanted:
            affine(normalise(x, (0, 2, 3), eps)),
        over + "over (1, 2, 3), per example across all channels (that is LayerNorm)." + wanted:
            affine(normalise(x, (1, 2, 3), eps)),
        over + "over (3,), along each row only." + wanted: affine(normalise(x, (3,), eps)),
        "you applied mults and adds BEFORE normalising: normalise x first, then multiply by mults and add adds.":
            normalise(x * g + b, IN_AXES, eps),
        "you did not subtract the mean: the normalised value is (x - mean) / sqrt(var + eps).":
            affine(normalise(x, IN_AXES, eps, center=False)),
        "you left out the scale and shift: multiply by mults and add adds.": normalise(x, IN_AXES, eps),
        "you swapped the scale and the shift: the output must be x_hat * mults + adds.":
            normalise(x, IN_AXES, eps) * b + g,
    }
    if x.shape[2:] == x.shape[:2]:  # only then does a dropped keepdim broadcast instead of raising
        found["you reduced without keepdim=True, so the (N, C) means and variances broadcast against (H, W) "
              "instead of the examples and channels: use keepdim=True (shape (N, C, 1, 1))."] = (
            affine(dropped_keepdim(x, IN_AXES, eps)))
    return distinguishable(found, affine(normalise(x, IN_AXES, eps)))


def set_channel_affine(layer: nn.Module, gamma: Tensor, beta: Tensor) -> None:
    """Copy gamma and beta (shape (C,)) into layer.mults and layer.adds, checking their shapes first."""
    for name, value in (("mults", gamma), ("adds", beta)):
        param = getattr(layer, name, None)
        if not isinstance(param, nn.Parameter):
            raise AssertionError(f"InstanceNorm.{name} must be an nn.Parameter of shape ({len(value)}, 1, 1); "
                                 f"got {type(param).__name__}")
        if tuple(param.shape) != (len(value), 1, 1):
            raise AssertionError(f"InstanceNorm.{name} must have shape ({len(value)}, 1, 1), one value per channel; "
                                 f"got {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(value.reshape(-1, 1, 1))

"""Read a wrong normalised output for what it shows: which axes it was normalised over, whether the mean or the
scale is off, whether the affine step is, and which channels or examples are affected.

Used when the output matches none of the catalogued mistakes, so a mistake nobody listed still gets a
sentence a student can act on.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

AXIS_NAMES = {(0, 2, 3): "per channel over the batch and positions (BatchNorm)",
              (2, 3): "per example and channel over the positions (InstanceNorm)",
              (1, 2, 3): "per example over channels and positions (LayerNorm)",
              (0, 1, 2, 3): "over the whole tensor at once", (0,): "over the batch only, per position",
              (1,): "over the channels only, per position", (3,): "along each row only", (2,): "along each column only",
              (0, 1): "over batch and channels, per position"}


def _normalise(x: Tensor, axes: tuple[int, ...], eps: float) -> Tensor:
    mean = x.mean(axes, keepdim=True)
    var = ((x - mean) ** 2).mean(axes, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def _close(a: Tensor, b: Tensor, tol: float = 1e-6) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=tol, rtol=tol))


def _listed(indices: list[int], limit: int = 6) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return shown + (", ..." if len(indices) > limit else "")


def normalisation(out: Tensor, x: Tensor, expected: Tensor, *, axes: tuple[int, ...], eps: float,
                  gamma: Tensor | None, beta: Tensor | None, layer: str) -> str | None:
    """A sentence about what went wrong in a (N, C, H, W) normalisation `out` (None if nothing is recognisable).

    gamma and beta are per channel, shape (C,), or scalars (0-dim) for the lesson's LayerNorm; None: no affine.
    """
    if out.shape != x.shape or x.dim() != 4 or torch.isnan(out).any():
        return None
    out, x, expected = out.double(), x.double(), expected.double()
    view = (1, -1, 1, 1)
    g = gamma.double().reshape(view) if gamma is not None and gamma.dim() else (gamma.double() if gamma is not None else None)
    b = beta.double().reshape(view) if beta is not None and beta.dim() else (beta.double() if beta is not None else None)
    z = out
    if g is not None:
        if (g == 0).any():
            return None
        z = (out - b) / g
    right = _normalise(x, axes, eps)
    # 1. The normalisation is right and only the affine step is wrong.
    if g is not None and _close(out, right):
        return "Your output is normalised correctly but not scaled and shifted: multiply by the scale and add the shift."
    if g is not None and not _close(z, right) and b is not None:
        for name, candidate in (("the scale and shift swapped", right * b + g),
                                ("the shift applied before the scale", (right + b) * g)):
            if _close(out, candidate):
                return f"Your normalisation is right, but you applied {name}: the output is x_hat * scale + shift."
    # 2. Normalised over other axes.
    for other, description in AXIS_NAMES.items():
        if other != axes and max(other) < x.dim() and _close(z, _normalise(x, other, eps)):
            return (f"Your output is normalised {description}, i.e. over dims {other}; {layer} normalises over dims "
                    f"{axes} ({AXIS_NAMES.get(axes, '')}).")
    # 3. Over the right axes, but the mean or the scale of each group is off.
    group_mean = z.mean(axes, keepdim=True)
    if not _close(group_mean, right.mean(axes, keepdim=True), 1e-5):
        worst = group_mean.abs().max().item()
        return (f"After undoing the scale and shift, a group of values {layer} normalises together has mean "
                f"{worst:.3g} instead of 0: the mean you subtract is not that group's mean over dims {axes}.")
    ratio = z.std(axes, keepdim=True, correction=0) / right.std(axes, keepdim=True, correction=0)
    if _close(ratio, ratio.flatten()[0].expand_as(ratio), 1e-4) and abs(ratio.flatten()[0].item() - 1) > 1e-4:
        r = ratio.flatten()[0].item()
        n = 1
        for a in axes:
            n *= x.shape[a]
        extra = f" (sqrt((n-1)/n) = {((n - 1) / n) ** 0.5:.4g} for n = {n}: the unbiased variance)" \
            if abs(r - ((n - 1) / n) ** 0.5) < 2e-3 else ""
        return (f"Every normalised group is {r:.4g} times as spread out as it should be{extra}: the variance (or eps) "
                f"you divide by is wrong.")
    # 4. Only some channels or some examples are wrong.
    bad = (out - expected).abs() > 1e-6 * (1 + expected.abs())
    channels = [c for c in range(x.shape[1]) if bad[:, c].any()]
    examples = [n for n in range(x.shape[0]) if bad[n].any()]
    if 0 < len(channels) < x.shape[1]:
        return f"Only channels {_listed(channels)} of {x.shape[1]} are wrong: look at what differs between channels."
    if 0 < len(examples) < x.shape[0]:
        return f"Only examples {_listed(examples)} of {x.shape[0]} are wrong: look at what differs between examples."
    return None


def centred_somewhere(out: Tensor, gamma: Tensor | None = None, beta: Tensor | None = None) -> bool:
    """Whether a (N, C, H, W) output is normalised at all: once a per-channel (or scalar) scale and shift is undone,
    the values of some grouping (per channel, per example, per example and channel, the whole tensor...) have mean
    0 and are not all equal. An identity, or a plain scale and shift of the input, is not; a normalisation with the
    wrong variance, eps or axes still is, so a property test gated on this does not charge that mistake twice.
    Outputs it cannot read (another shape, NaN, a zero scale) count as normalised: other tests judge them."""
    if out.dim() != 4 or not torch.isfinite(out).all():
        return True
    z = out.detach().double()
    if gamma is not None and beta is not None:
        g, b = gamma.detach().double(), beta.detach().double()
        if (g == 0).any():
            return True
        if g.dim():
            g, b = g.reshape(1, -1, 1, 1), b.reshape(1, -1, 1, 1)
        z = (z - b) / g
    scale = 1 + z.abs().max().item()
    if z.std().item() <= 1e-9 * scale:
        return False
    return any(z.mean(axes, keepdim=True).abs().max().item() <= 1e-7 * scale for axes in AXIS_NAMES)

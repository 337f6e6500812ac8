"""Q3's optional challenge: BatchNorm's backward pass written by hand, checked with torch.autograd.gradcheck.

Ungraded. `check_batchnorm_function(BatchNormFunction)` compares the student's `torch.autograd.Function` with
PyTorch's own training-mode batch norm (forward) and with finite differences (backward), on a small float64 input,
and prints what it found; it never raises for a wrong answer (nothing is graded), only for a class that is not a
`torch.autograd.Function`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


def check_batchnorm_function(fn: type, eps: float = EPS) -> bool:
    """Check `fn.apply(x, eps)` (x of shape (N, C, H, W), no scale or shift) and its backward; print, return ok."""
    if not (isinstance(fn, type) and issubclass(fn, torch.autograd.Function)):
        raise TypeError(f"expected a subclass of torch.autograd.Function, got {fn!r}")
    x = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2 + 1
    x.requires_grad_(True)
    try:
        out = fn.apply(x, eps)
    except NotImplementedError:
        print("The optional challenge is not attempted (forward raises NotImplementedError): nothing to check.")
        return False
    want = F.batch_norm(x.detach(), None, None, training=True, eps=eps)
    if not isinstance(out, torch.Tensor) or out.shape != want.shape:
        print(f"forward should return a tensor of shape {tuple(want.shape)}, got {type(out).__name__} "
              f"{tuple(getattr(out, 'shape', ()))}")
        return False
    gap = (out.detach() - want).abs().max().item()
    if gap > 1e-9:
        print(f"forward differs from F.batch_norm(x, None, None, training=True, eps={eps}) by up to {gap:.2e}: "
              "per channel over (N, H, W), the biased variance, eps inside the square root")
        return False
    try:
        ok = torch.autograd.gradcheck(lambda t: fn.apply(t, eps), (x,), eps=1e-6, atol=1e-5, raise_exception=False)
    except NotImplementedError:
        print("forward is right; backward raises NotImplementedError: write it next.")
        return False
    if not ok:
        upstream = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(4))
        (g_out,) = torch.autograd.grad(fn.apply(x, eps), x, upstream)
        sums = g_out.sum(dim=(0, 2, 3)).abs().max().item()
        hint = (f" Your gradient's sum over each channel is not 0 (up to {sums:.2g}): the true one is 0, because adding"
                " a constant to a channel does not change its output; the terms through the mean are missing."
                ) if sums > 1e-6 else ""
        print("forward is right, but gradcheck finds the backward wrong (it differs from finite differences)." + hint)
        return False
    print("forward matches F.batch_norm and gradcheck passes: your backward is right.")
    return True

"""Hidden-test helpers for Q2 (BatchNorm's dependence on the batch): the oracle for spread_across_batches
and the outputs of the usual mistakes."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from course_grading.checks import expect_close, require_tensor, seeded_input

Tensor = torch.Tensor


def _batches(example: Tensor, mate_batches: Tensor) -> Tensor:
    """(T, M+1, C, H, W): the example first in every trial's batch."""
    t = mate_batches.shape[0]
    return torch.cat([example.expand(t, 1, *example.shape), mate_batches], dim=1)


def oracle(example: Tensor, mate_batches: Tensor, eps: float) -> Tensor:
    """torch's own train-mode batch_norm per trial, the example's rows, population std over trials, mean over H, W."""
    outputs = torch.stack([F.batch_norm(batch, None, None, None, None, True, 0.0, eps)[0]
                           for batch in _batches(example, mate_batches)])
    return outputs.std(dim=0, correction=0).mean(dim=(1, 2))


def _normalise(batches: Tensor, eps: float, dims=(1, 3, 4), correction: int = 0, eps_outside: bool = False) -> Tensor:
    mean = batches.mean(dim=dims, keepdim=True)
    var = batches.var(dim=dims, keepdim=True, correction=correction)
    if eps_outside:
        return (batches - mean) / (var.sqrt() + eps)
    return (batches - mean) / (var + eps).sqrt()


def mistakes(example: Tensor, mate_batches: Tensor, eps: float) -> dict[str, Tensor]:
    """What the usual mistakes return on this input."""
    batches = _batches(example, mate_batches)
    right = _normalise(batches, eps)[:, 0]
    wrong = {
        "you normalised with the unbiased variance (divide by n-1); BatchNorm's output uses the biased one (divide by n).":
            _normalise(batches, eps, correction=1)[:, 0].std(0, correction=0).mean((1, 2)),
        "you added eps to the standard deviation; it goes inside the square root: sqrt(var + eps).":
            _normalise(batches, eps, eps_outside=True)[:, 0].std(0, correction=0).mean((1, 2)),
        "you took the unbiased standard deviation over the trials; the contract says the population one (correction=0).":
            right.std(0, correction=1).mean((1, 2)),
        "you computed the variance over the trials, not the standard deviation.": right.var(0, correction=0).mean((1, 2)),
        "you took one standard deviation over trials and positions together; take it over the trials, then average "
        "over H and W.": right.transpose(0, 1).reshape(right.shape[1], -1).std(1, correction=0),
        "you took the largest spread over H and W; the contract says the mean.": right.std(0, correction=0).amax((1, 2)),
        "the batch statistics leave the example out: it belongs to its batch (first item).":
            ((batches[:, 0] - batches[:, 1:].mean((1, 3, 4))[:, :, None, None])
             / (batches[:, 1:].var((1, 3, 4), correction=0)[:, :, None, None] + eps).sqrt()).std(0, correction=0).mean((1, 2)),
        "you normalised each position separately (statistics over the batch only); BatchNorm2d's statistics run "
        "over the batch and H and W.": _normalise(batches, eps, dims=(1,))[:, 0].std(0, correction=0).mean((1, 2)),
        "your spread is zero: the statistics you normalise with do not depend on the batch mates (per-example "
        "statistics, or all trials pooled into one batch).": torch.zeros(example.shape[0], dtype=example.dtype),
    }
    return wrong


def _call(spread: Callable, example: Tensor, mate_batches: Tensor, eps: float | None) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = spread(example, mate_batches) if eps is None else spread(example, mate_batches, eps)
    return require_tensor(out, "spread_across_batches(...)")


def check_values(spread: Callable) -> None:
    """Against torch's own train-mode batch_norm on inputs where every example and channel differ, eps 0.5 and default."""
    cases = [((5, 2, 3, 2, 2), 0.5, 0), ((4, 1, 2, 3, 2), 0.5, 1), ((6, 3, 4, 1, 1), None, 2), ((3, 7, 3, 2, 3), 1e-5, 3)]
    for (t, m, c, h, w), eps, seed in cases:
        example = seeded_input(1, c, h, w, seed=seed)[0]
        mate_batches = seeded_input(t * m, c, h, w, seed=seed + 10).view(t, m, c, h, w)
        used_eps = 1e-5 if eps is None else eps
        what = (f"spread_across_batches(example {tuple(example.shape)}, mate_batches {tuple(mate_batches.shape)}"
                f"{'' if eps is None else f', eps={eps}'})")
        expect_close(_call(spread, example, mate_batches, eps), oracle(example, mate_batches, used_eps), what,
                     atol=1e-9, rtol=1e-7, mistakes=mistakes(example, mate_batches, used_eps))


def check_contract(spread: Callable) -> None:
    """dtype kept, zero spread without mates or with identical trials, ValueError on shapes that do not fit."""
    example = seeded_input(1, 3, 2, 2, seed=7)[0]
    mates = seeded_input(4 * 2, 3, 2, 2, seed=8).view(4, 2, 3, 2, 2)
    out = _call(spread, example.float(), mates.float(), None)
    if out.dtype != torch.float32:
        raise AssertionError(f"for float32 inputs the spread should be float32, got {out.dtype}")
    expect_close(out.double(), oracle(example, mates, 1e-5), "the spread for float32 inputs", atol=1e-4, rtol=1e-4)
    alone = _call(spread, example, torch.empty(4, 0, 3, 2, 2, dtype=torch.float64), 0.5)
    expect_close(alone, torch.zeros(3, dtype=torch.float64), "the spread with no batch mates (batches of one)", atol=1e-12)
    same = _call(spread, example, mates[:1].expand(4, 2, 3, 2, 2).clone(), 0.5)
    expect_close(same, torch.zeros(3, dtype=torch.float64), "the spread when every trial has the same batch mates",
                 atol=1e-12)
    bad = [
        (example[None], mates, "an example with a batch dimension (1, C, H, W)"),
        (example, mates[0], "mate_batches without a trial dimension (M, C, H, W)"),
        (example, seeded_input(8, 2, 2, 2).view(4, 2, 2, 2, 2), "mates with 2 channels for an example with 3"),
        (example, seeded_input(8, 3, 2, 3).view(4, 2, 3, 2, 3), "mates of size 2x3 for an example of size 2x2"),
    ]
    for ex, mb, why in bad:
        try:
            _call(spread, ex, mb, None)
        except ValueError as err:
            if not str(err).strip():
                raise AssertionError(f"the ValueError for {why} has no message; say what is wrong") from None
            continue
        except Exception as err:
            raise AssertionError(f"for {why} spread_across_batches raised {type(err).__name__} ({err}); the contract "
                                 f"says ValueError") from None
        raise AssertionError(f"for {why} spread_across_batches raised nothing; the contract says ValueError")

"""Q2's verdicts: spread_across_batches against torch's own train-mode batch_norm, trial by trial."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_judge import verdict
from course_judge.compare import expect_close, expect_raises, layout_hint, layout_mistake
from course_judge.records import Fail, Raised, Records
from course_judge.reference import same_inputs
from course_recorder import q2

Tensor = torch.Tensor


def _batches(example: Tensor, mate_batches: Tensor) -> Tensor:
    """(T, M+1, C, H, W): the example first in every trial's batch."""
    t = mate_batches.shape[0]
    return torch.cat([example.expand(t, 1, *example.shape), mate_batches], dim=1)


def oracle(example: Tensor, mate_batches: Tensor, eps: float) -> Tensor:
    """torch's train-mode batch_norm per trial, the example's rows, population std over trials, mean over H, W."""
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
    return {
        "q2.unbiased_variance": _normalise(batches, eps, correction=1)[:, 0].std(0, correction=0).mean((1, 2)),
        "q2.eps_outside_sqrt": _normalise(batches, eps, eps_outside=True)[:, 0].std(0, correction=0).mean((1, 2)),
        "q2.unbiased_std": right.std(0, correction=1).mean((1, 2)),
        "q2.variance_not_std": right.var(0, correction=0).mean((1, 2)),
        "q2.std_over_trials_and_positions": right.transpose(0, 1).reshape(right.shape[1], -1).std(1, correction=0),
        "q2.max_spread": right.std(0, correction=0).amax((1, 2)),
        "q2.example_left_out":
            ((batches[:, 0] - batches[:, 1:].mean((1, 3, 4))[:, :, None, None])
             / (batches[:, 1:].var((1, 3, 4), correction=0)[:, :, None, None] + eps).sqrt()).std(0, correction=0).mean((1, 2)),
        "q2.per_position_statistics": _normalise(batches, eps, dims=(1,))[:, 0].std(0, correction=0).mean((1, 2)),
        "q2.zero_spread": torch.zeros(example.shape[0], dtype=example.dtype),
        "q2.sqrt_of_mean_variance": right.var(0, correction=0).mean((1, 2)).sqrt(),
        **({} if eps == 1e-5 else {
            "q2.default_eps": _normalise(batches, 1e-5)[:, 0].std(0, correction=0).mean((1, 2))}),
    }


def diagnosis(spread: Tensor, example: Tensor, mate_batches: Tensor, eps: float) -> str | None:
    """What a wrong spread (of the right shape) shows: which channels are off, or a constant factor."""
    right = oracle(example, mate_batches, eps)
    if spread.shape != right.shape or not torch.isfinite(spread).all():
        return None
    spread = spread.double()
    bad = [c for c in range(len(right)) if abs(spread[c] - right[c]) > 1e-7 * (1 + abs(right[c]))]
    if 0 < len(bad) < len(right):
        return (f"Only channel(s) {', '.join(map(str, bad))} of {len(right)} are wrong: each channel has its own "
                f"statistics (its mean and variance over the batch and the positions) and its own spread.")
    if len(right) > 1 and torch.allclose(spread, spread.mean().expand_as(spread)) and not torch.allclose(
            right, right.mean().expand_as(right)):
        return ("Every channel has the same spread: compute the normalisation and the spread per channel, "
                "not over all channels together.")
    ratio = spread / right
    if (right > 0).all() and torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-6):
        return (f"Every spread is {ratio.mean().item():.4g} times the right one: the normalised outputs are right up to "
                f"a constant factor, so look at what you divide by (sqrt(var + eps), the biased variance) and at the "
                f"spread's own formula (population standard deviation over the trials).")
    return None


@verdict("Q2", "test_spread_values")
def spread_values(r: Records) -> None:
    for i, case in enumerate(q2.VALUE_CASES):
        example, mates = q2.value_inputs(case)
        eps = 1e-5 if case[1] is None else case[1]
        what = (f"spread_across_batches(example {tuple(example.shape)}, mate_batches {tuple(mates.shape)}"
                f"{'' if case[1] is None else f', eps={case[1]}'})")
        expect_close(r.get(f"case{i}"), oracle(example, mates, eps), what, atol=1e-9, rtol=1e-7,
                     mistakes=mistakes(example, mates, eps),
                     diagnose=lambda v, example=example, mates=mates, eps=eps: diagnosis(v, example, mates, eps))
        same_inputs(r, f"case{i}", example, mates)


@verdict("Q2", "test_spread_contract")
def spread_contract(r: Records) -> None:
    example, mates = q2.contract_inputs()
    expect_close(r.get("float32"), oracle(example, mates, 1e-5).float(), "the spread for float32 inputs",
                 atol=1e-4, rtol=1e-4)
    zeros = torch.zeros(3, dtype=torch.float64)
    expect_close(r.get("alone"), zeros, "the spread with no batch mates (batches of one)", atol=1e-12)
    expect_close(r.get("same"), zeros, "the spread when every trial has the same batch mates", atol=1e-12)
    for key, layout, want in (("transposed", "a transposed view: H and W swapped in memory",
                               oracle(example, mates, 0.5)),
                              ("expanded", "mate_batches made with .expand, as in the demo", zeros)):
        what = f"the spread for inputs in another memory layout ({layout}; the same values)"
        if isinstance(r.get(key), Raised) and not r.get(key).is_a("DelegationError"):
            raise Fail(f"{what}: the call raised {r.get(key)}{layout_hint(r.get(key))}",
                       mistake=layout_mistake(r.get(key)))
        expect_close(r.get(key), want, what, atol=1e-9, rtol=1e-7)
    for i, why in enumerate(q2.BAD_CASES):
        expect_raises(r.get(f"bad{i}"), f"spread_across_batches for {why}")

"""Hidden-test helpers for Q1 (what BatchNorm learns and what it measures): per-channel statistics and
one example's output inside different batches."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from course_grading.checks import expect_close, random_affine, require_tensor, seeded_input

Tensor = torch.Tensor


def _shape_hint(shape: tuple, n: int, c: int, h: int, w: int) -> str:
    hints = {
        (1, c, 1, 1): "you kept the reduced dimensions (keepdim=True); return one value per channel, shape (C,).",
        (n, c): "you reduced over H and W only; the statistics of a channel also run over the batch (dims 0, 2, 3).",
        (n,): "you reduced over C, H and W: those are per-example statistics; BatchNorm's are per channel.",
        (c, h, w): "you reduced over the batch only; also reduce over H and W (dims 0, 2, 3).",
        (): "you reduced over every dimension; keep one value per channel.",
    }
    return hints.get(tuple(shape), "")


def _stats(channel_stats: Callable, x: Tensor, what: str) -> tuple[Tensor, Tensor]:
    result = channel_stats(x)
    if not isinstance(result, tuple) or len(result) != 2:
        raise AssertionError(f"{what}: expected a tuple (mean, var), got {type(result).__name__}")
    mean, var = (require_tensor(t, f"{what}[{i}]") for i, t in enumerate(result))
    n, c, h, w = x.shape
    for name, t in (("mean", mean), ("var", var)):
        if t.shape != (c,):
            hint = _shape_hint(tuple(t.shape), n, c, h, w)
            raise AssertionError(f"{what}: the {name} should have shape ({c},), got {tuple(t.shape)}. {hint}".strip())
        if t.dtype != x.dtype:
            raise AssertionError(f"{what}: the {name} has dtype {t.dtype}; keep the input's dtype {x.dtype}")
    return mean, var


def check_channel_stats_values(channel_stats: Callable) -> None:
    """Mean and biased variance per channel, on inputs where every example and channel has its own offset and scale."""
    for shape, seed in (((5, 3, 4, 6), 0), ((2, 4, 1, 3), 1), ((7, 2, 2, 2), 2)):
        x = seeded_input(*shape, seed=seed)
        what = f"channel_stats(x) for x of shape {shape}"
        mean, var = _stats(channel_stats, x, what)
        flat = x.transpose(0, 1).reshape(shape[1], -1)  # (C, N*H*W)
        want_mean = flat.sum(1) / flat.shape[1]
        centred = flat - want_mean[:, None]
        want_var = (centred ** 2).sum(1) / flat.shape[1]
        expect_close(mean, want_mean, f"{what}: the mean")
        per_example = x.var(dim=(2, 3), correction=0).mean(0)
        expect_close(var, want_var, f"{what}: the variance", mistakes={
            "you used the unbiased variance (divide by n-1); the contract says biased (divide by n).":
                (centred ** 2).sum(1) / (flat.shape[1] - 1),
            "you returned the standard deviation, not the variance.": want_var.sqrt(),
            "you returned the mean of the squares without subtracting the mean first.": (flat ** 2).mean(1),
            "you averaged each example's own variance: that misses how the examples differ from each other; "
            "take the variance over batch and positions together.": per_example,
        })


def check_channel_stats_contract(channel_stats: Callable) -> None:
    """Shapes, dtype kept (float32 and float64) and a ValueError for an input that is not 4-D."""
    x = seeded_input(6, 5, 3, 2, seed=3)
    _stats(channel_stats, x, "channel_stats(x) for a float64 x of shape (6, 5, 3, 2)")
    mean, var = _stats(channel_stats, x.float(), "channel_stats(x) for a float32 x of shape (6, 5, 3, 2)")
    expect_close(mean.double(), x.mean((0, 2, 3)), "the float32 mean", atol=1e-5, rtol=1e-5)
    expect_close(var.double(), x.var((0, 2, 3), correction=0), "the float32 variance", atol=1e-4, rtol=1e-4)
    for bad in (torch.ones(4, 3), torch.ones(2, 3, 4), torch.ones(1, 2, 3, 4, 5)):
        try:
            channel_stats(bad)
        except ValueError as err:
            if not str(err).strip():
                raise AssertionError("channel_stats raised a ValueError without a message; say what is wrong") from None
            continue
        except Exception as err:
            raise AssertionError(f"channel_stats(x) for x of shape {tuple(bad.shape)} raised {type(err).__name__}; "
                                 f"the contract says ValueError for an input that is not (N, C, H, W)") from None
        raise AssertionError(f"channel_stats(x) for x of shape {tuple(bad.shape)} raised nothing; the contract says "
                             f"ValueError for an input that is not (N, C, H, W)")


# ---------------------------------------------------------------------------------------------
# output_in_batch
# ---------------------------------------------------------------------------------------------

def make_layer(num_features: int = 3, momentum: float = 0.3, eps: float = 0.5) -> nn.BatchNorm2d:
    """A float64 BatchNorm2d with non-trivial gamma, beta and running statistics (as after some training)."""
    bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum).double()
    gamma, beta = random_affine(num_features, seed=5)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
        bn.running_mean.copy_(torch.randn(num_features, generator=g, dtype=torch.float64) * 2)
        bn.running_var.copy_(torch.rand(num_features, generator=g, dtype=torch.float64) * 3 + 0.5)
        bn.num_batches_tracked.fill_(7)
    return bn


def _inputs(num_mates: int, seed: int) -> tuple[Tensor, Tensor]:
    example = seeded_input(1, 3, 2, 2, seed=seed)[0]
    mates = seeded_input(num_mates, 3, 2, 2, seed=seed + 100) if num_mates else torch.empty(0, 3, 2, 2, dtype=torch.float64)
    return example, mates


def _call(output_in_batch: Callable, bn: nn.Module, example: Tensor, mates: Tensor, train: bool, what: str) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = output_in_batch(bn, example, mates, train)
    out = require_tensor(out, what)
    if out.shape == (len(mates) + 1, *example.shape):
        raise AssertionError(f"{what}: you returned the whole batch's output {tuple(out.shape)}; return only the "
                             f"example's, shape {tuple(example.shape)}")
    return out.detach()


def _train_oracle(bn: nn.BatchNorm2d, batch: Tensor) -> Tensor:
    return F.batch_norm(batch, None, None, bn.weight.detach(), bn.bias.detach(), True, 0.0, bn.eps)


def _eval_oracle(bn: nn.BatchNorm2d, batch: Tensor) -> Tensor:
    return F.batch_norm(batch, bn.running_mean.clone(), bn.running_var.clone(), bn.weight.detach(),
                        bn.bias.detach(), False, 0.0, bn.eps)


def check_train_output(output_in_batch: Callable) -> None:
    """Train mode: the example is normalised with the statistics of the whole batch it sits in."""
    for num_mates, seed in ((4, 0), (1, 1), (9, 2)):
        bn = make_layer()
        example, mates = _inputs(num_mates, seed)
        batch = torch.cat([example[None], mates])
        what = f"output_in_batch(bn, example, mates, train=True) with {num_mates} batch mates (bn.eps = 0.5)"
        out = _call(output_in_batch, bn, example, mates, True, what)
        expect_close(out, _train_oracle(bn, batch)[0], what, mistakes={
            "you used the running statistics: in train mode BatchNorm uses the batch's own mean and variance.":
                _eval_oracle(bn, batch)[0],
            "you normalised the example on its own: its batch mates must be part of the batch statistics.":
                _train_oracle(bn, example[None])[0],
            "the batch statistics leave the example out: it belongs to the batch (put it first).":
                (example - mates.mean((0, 2, 3))[:, None, None])
                / (mates.var((0, 2, 3), correction=0)[:, None, None] + bn.eps).sqrt()
                * bn.weight.detach()[:, None, None] + bn.bias.detach()[:, None, None],
            "you returned the output of the first batch mate, not the example's.": _train_oracle(bn, batch)[1],
            "you returned the output of the last batch mate, not the example's.": _train_oracle(bn, batch)[-1],
        })


def check_eval_output(output_in_batch: Callable) -> None:
    """Eval mode: the example is normalised with the running statistics, whatever its batch mates."""
    for num_mates, seed in ((4, 0), (0, 1), (9, 2)):
        bn = make_layer()
        example, mates = _inputs(num_mates, seed)
        batch = torch.cat([example[None], mates])
        what = f"output_in_batch(bn, example, mates, train=False) with {num_mates} batch mates (bn.eps = 0.5)"
        out = _call(output_in_batch, bn, example, mates, False, what)
        wrong = {}
        if len(batch) > 1:
            wrong["you used the batch statistics: in eval mode BatchNorm uses its running mean and variance."] = (
                _train_oracle(bn, batch)[0])
        expect_close(out, _eval_oracle(bn, batch)[0], what, mistakes=wrong)


def check_no_side_effects(output_in_batch: Callable) -> None:
    """The layer's buffers, parameters and mode are the same after the call as before, in both modes."""
    for start_in_train in (True, False):
        for train in (True, False):
            bn = make_layer()
            bn.train(start_in_train)
            before = {k: v.clone() for k, v in bn.state_dict().items()}
            example, mates = _inputs(3, 4)
            _call(output_in_batch, bn, example, mates, train, "output_in_batch")
            what = (f"output_in_batch(bn, example, mates, train={train}) on a layer in "
                    f"{'train' if start_in_train else 'eval'} mode")
            for key, value in bn.state_dict().items():
                if not torch.equal(value, before[key]):
                    raise AssertionError(
                        f"{what} changed bn.{key} (from {before[key].tolist()} to {value.tolist()}). A train-mode forward "
                        f"updates the running statistics: measuring must not change the layer (use a copy, or save and "
                        f"restore the buffers).")
            if bn.training != start_in_train:
                raise AssertionError(f"{what} left the layer in {'train' if bn.training else 'eval'} mode; put it back "
                                     f"in the mode it was in.")

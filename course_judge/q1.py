"""Q1's verdicts: per-channel statistics, and one example's output inside different batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_judge import verdict
from course_judge.compare import close, expect_close, expect_raises, layout_hint, layout_mistake, tensor
from course_judge.records import Fail, Raised, Records
from course_judge.reference import same_inputs
from course_recorder import q1
from course_recorder.inputs import LAYOUTS, seeded_input

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


def _stats(value: object, x: Tensor, what: str) -> tuple[Tensor, Tensor]:
    if isinstance(value, Raised):
        raise Fail(f"{what}: raised {value}{layout_hint(value)}", mistake=layout_mistake(value))
    if not isinstance(value, tuple) or len(value) != 2:
        raise Fail(f"{what}: expected a tuple (mean, var), got {type(value).__name__}")
    mean, var = (tensor(t, f"{what}[{i}]") for i, t in enumerate(value))
    n, c, h, w = x.shape
    for name, t in (("mean", mean), ("var", var)):
        if t.shape != (c,):
            hint = _shape_hint(tuple(t.shape), n, c, h, w)
            raise Fail(f"{what}: the {name} should have shape ({c},), got {tuple(t.shape)}. {hint}".strip())
        if t.dtype != x.dtype:
            raise Fail(f"{what}: the {name} has dtype {t.dtype}; keep the input's dtype {x.dtype}")
    return mean, var


def _variance_diagnosis(var: Tensor, x: Tensor) -> str | None:
    """Read a wrong variance: a constant ratio to the right one, or a pattern over channels."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    right = flat.var(1, correction=0)
    n = flat.shape[1]
    ratio = var / right
    if torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-6):
        r = ratio.mean().item()
        if abs(r - n / (n - 1)) < 1e-6:
            return f"Every variance is n/(n-1) = {n}/{n - 1} times the right one: you divided by n-1, not n."
        return f"Every variance is {r:.4g} times the right one: check what you divide by (n = N*H*W = {n})."
    return None


@verdict("Q1", "test_channel_stats_values")
def channel_stats_values(r: Records) -> None:
    for i, (shape, seed) in enumerate(q1.VALUE_CASES):
        x = seeded_input(*shape, seed=seed)
        what = f"channel_stats(x) for x of shape {shape}"
        mean, var = _stats(r.get(f"case{i}"), x, what)
        same_inputs(r, f"case{i}", x)
        flat = x.transpose(0, 1).reshape(shape[1], -1)  # (C, N*H*W)
        want_mean = flat.sum(1) / flat.shape[1]
        centred = flat - want_mean[:, None]
        want_var = (centred ** 2).sum(1) / flat.shape[1]
        expect_close(mean, want_mean, f"{what}: the mean")
        per_example = x.var(dim=(2, 3), correction=0).mean(0)
        expect_close(var, want_var, f"{what}: the variance", mistakes={
            "q1.unbiased_variance": (centred ** 2).sum(1) / (flat.shape[1] - 1),
            "q1.standard_deviation": want_var.sqrt(),
            "q1.mean_not_subtracted": (flat ** 2).mean(1),
            "q1.within_example_variance": per_example,
        }, diagnose=lambda v: _variance_diagnosis(v, x))


@verdict("Q1", "test_channel_stats_contract")
def channel_stats_contract(r: Records) -> None:
    shape, seed = q1.CONTRACT_X
    x = seeded_input(*shape, seed=seed)
    _stats(r.get("float64"), x, f"channel_stats(x) for a float64 x of shape {shape}")
    mean, var = _stats(r.get("float32"), x.float(), f"channel_stats(x) for a float32 x of shape {shape}")
    expect_close(mean.double(), x.mean((0, 2, 3)), "the float32 mean", atol=1e-5, rtol=1e-5)
    expect_close(var.double(), x.var((0, 2, 3), correction=0), "the float32 variance", atol=1e-4, rtol=1e-4)
    for layout in LAYOUTS:
        what = f"channel_stats(x) for a {layout} x of shape {shape} (the same values, another memory layout)"
        mean, var = _stats(r.get(layout), x, what)
        expect_close(mean, x.mean((0, 2, 3)), f"{what}: the mean")
        expect_close(var, x.var((0, 2, 3), correction=0), f"{what}: the variance")
    for i, bad in enumerate(q1.NOT_4D):
        expect_raises(r.get(f"bad{i}"), f"channel_stats(x) for x of shape {bad} (not (N, C, H, W))")


def _output(r: Records, key: str, example: Tensor, mates: Tensor, what: str) -> Tensor:
    out = tensor(r.get(key), what)
    if out.shape == (len(mates) + 1, *example.shape):
        raise Fail(f"{what}: you returned the whole batch's output {tuple(out.shape)}; return only the example's, "
                   f"shape {tuple(example.shape)}")
    same_inputs(r, key, example, mates)
    return out


def _train_oracle(bn, batch: Tensor) -> Tensor:
    return F.batch_norm(batch, None, None, bn.weight.detach(), bn.bias.detach(), True, 0.0, bn.eps)


def _eval_oracle(bn, batch: Tensor) -> Tensor:
    return F.batch_norm(batch, bn.running_mean.clone(), bn.running_var.clone(), bn.weight.detach(),
                        bn.bias.detach(), False, 0.0, bn.eps)


@verdict("Q1", "test_output_in_batch_train")
def output_in_batch_train(r: Records) -> None:
    for i, (num_mates, seed) in enumerate(q1.TRAIN_CASES):
        bn = q1.make_layer()
        example, mates = q1.example_and_mates(num_mates, seed)
        batch = torch.cat([example[None], mates])
        what = f"output_in_batch(bn, example, mates, train=True) with {num_mates} batch mates (bn.eps = 0.5)"
        out = _output(r, f"case{i}", example, mates, what)
        g, b = bn.weight.detach()[:, None, None], bn.bias.detach()[:, None, None]
        mistakes = {
            **unnormalised(bn, example),
            "q1.running_statistics_in_train": _eval_oracle(bn, batch)[0],
            "q1.unbiased_variance_output":
                (example - batch.mean((0, 2, 3))[:, None, None])
                / (batch.var((0, 2, 3), correction=1)[:, None, None] + bn.eps).sqrt() * g + b,
        }
        if num_mates:  # mistakes that only show with batch mates
            mistakes.update({
                "q1.example_alone": _train_oracle(bn, example[None])[0],
                "q1.example_left_out":
                    (example - mates.mean((0, 2, 3))[:, None, None])
                    / (mates.var((0, 2, 3), correction=0)[:, None, None] + bn.eps).sqrt() * g + b,
                "q1.first_mate_output": _train_oracle(bn, batch)[1],
                "q1.last_mate_output": _train_oracle(bn, batch)[-1],
            })
        expect_close(out, _train_oracle(bn, batch)[0], what, mistakes=mistakes)


@verdict("Q1", "test_output_in_batch_eval")
def output_in_batch_eval(r: Records) -> None:
    for i, (num_mates, seed) in enumerate(q1.EVAL_CASES):
        bn = q1.make_layer()
        example, mates = q1.example_and_mates(num_mates, seed)
        batch = torch.cat([example[None], mates])
        what = f"output_in_batch(bn, example, mates, train=False) with {num_mates} batch mates (bn.eps = 0.5)"
        out = _output(r, f"case{i}", example, mates, what)
        wrong = unnormalised(bn, example)
        if len(batch) > 1:
            wrong["q1.batch_statistics_in_eval"] = (
                _train_oracle(bn, batch)[0])
        expect_close(out, _eval_oracle(bn, batch)[0], what, mistakes=wrong)


@verdict("Q1", "test_output_in_batch_leaves_layer")
def output_in_batch_leaves_layer(r: Records) -> None:
    before = {k: v.clone() for k, v in q1.make_layer().state_dict().items()}
    for i, (start, train) in enumerate(q1.SIDE_EFFECT_CASES):
        what = (f"output_in_batch(bn, example, mates, train={train}) on a layer in "
                f"{'train' if start else 'eval'} mode")
        tensor_or_raise = r.get(f"case{i}")
        if isinstance(tensor_or_raise, Raised):
            raise Fail(f"{what} raised {tensor_or_raise}")
        state = r.get(f"case{i}/state")
        if not isinstance(state, dict) or set(state) != set(before):
            raise Fail(f"{what}: the layer's state_dict changed its keys (to {sorted(state) if isinstance(state, dict) else state})")
        for key, value in before.items():
            got = tensor(state[key], f"bn.{key} after the call")
            if got.shape != value.shape or not torch.equal(got, value):
                raise Fail(f"{what} changed bn.{key} (from {value.tolist()} to {got.tolist()}). A train-mode forward "
                           f"updates the running statistics: measuring must not change the layer (use a copy, or save "
                           f"and restore the buffers).")
        if r.get(f"case{i}/training") is not start:
            raise Fail(f"{what} left the layer in {'eval' if start else 'train'} mode; put it back in the mode it was in.")
        _not_the_example(tensor_or_raise, what)


def _not_the_example(out: object, what: str) -> None:
    """Leaving the layer alone earns the point only together with the layer's output: returning the example itself
    (or only scaled and shifted by gamma and beta) leaves every layer alone for free."""
    bn = q1.make_layer()
    example, _ = q1.example_and_mates(3, 4)
    g, b = bn.weight.detach()[:, None, None], bn.bias.detach()[:, None, None]
    out = tensor(out, what)
    for unchanged, how in ((example, ""), (example * g + b, " scaled and shifted by gamma and beta")):
        if close(out, unchanged, 1e-9, 1e-7):
            raise Fail(f"{what} returned the example itself{how}, not bn's output: nothing was normalised. Leaving the "
                       f"layer unchanged earns this test's point only together with the layer's output (see "
                       f"test_output_in_batch_train and test_output_in_batch_eval).")


def unnormalised(bn, example: Tensor) -> dict[str, Tensor]:
    """What returning the example without normalising it gives."""
    g, b = bn.weight.detach()[:, None, None], bn.bias.detach()[:, None, None]
    return {"q1.returned_example": example,
            "q1.returned_example_scaled": example * g + b}

"""What the per-example normalizations (Q6 LayerNorm, Q7 InstanceNorm, Q8 GroupNorm) share: their reference math,
the wrong variants of it, and the checks of properties that compare the student's own outputs."""

from __future__ import annotations

import torch

from course_judge.compare import close, expect_gradients, expect_no_error, layout_hint, layout_mistake, summary, tensor
from course_judge.records import Fail, Raised, Records
from course_lib.mistakes import naming

Tensor = torch.Tensor


def normalise(x: Tensor, axes: tuple[int, ...], eps: float, *, unbiased: bool = False, eps_outside: bool = False,
              center: bool = True) -> Tensor:
    """(x - mean) / sqrt(var + eps) over `axes`, or one of its catalogued wrong variants."""
    mean = x.mean(axes, keepdim=True)
    n = 1
    for axis in axes:
        n *= x.shape[axis]
    var = ((x - mean) ** 2).sum(axes, keepdim=True) / (n - 1 if unbiased else n)
    centred = x - mean if center else x
    return centred / (var.sqrt() + eps if eps_outside else (var + eps).sqrt())


def normalisations(x: Tensor, eps: float, groupings: tuple[tuple[int, ...], ...]) -> list[Tensor]:
    """x normalised over each of `groupings` (axes), with and without eps, and with every slip test_output names
    (the unbiased variance, eps outside the square root, the mean not subtracted): each is still a layer that
    measures its groups and divides by their spread, so a property test (batch independence, train == eval,
    gradients) does not take a second point for the mistake test_output already costs. A layer that returns its
    input, or only scales and shifts it, or applies any elementwise function, matches none of them."""
    return [normalise(x, axes, e, unbiased=u, eps_outside=o, center=c) for axes in groupings for e in (eps, 0.0)
            for u in (False, True) for o in (False, True) for c in (True, False)]


def dropped_keepdim(x: Tensor, axes: tuple[int, ...], eps: float) -> Tensor:
    """The statistics reduced without keepdim=True, so they broadcast against the LAST dimensions of x."""
    mean = x.mean(axes)
    var = x.var(axes, correction=0)
    return (x - mean) / (var + eps).sqrt()


def distinguishable(mistakes: dict[str, Tensor], right: Tensor) -> dict[str, Tensor]:
    """Only the mistakes whose output differs from the right one (eps misuse is invisible when eps=1e-5)."""
    return {k: v for k, v in mistakes.items() if not close(v, right, 1e-6, 1e-5)}


def expect_no_buffers(buffers: object, name: str) -> None:
    """A per-example normalization has nothing to remember between batches."""
    if buffers:
        raise Fail(f"{name} has buffers {buffers}: it normalises every example with that example's own statistics, in "
                   f"training and in eval, so it keeps no running statistics")


def _out(r: Records, key: str, what: str) -> Tensor:
    return tensor(expect_no_error(r.get(key), what), what)


def expect_examples_independent(r: Records, key: str, x: Tensor, name: str, normalised: list[Tensor]) -> None:
    """Each example's recorded output alone equals its output inside the batch (probes.independence), and the
    batch's output is normalised (`normalised`: expect_normalised's candidates)."""
    whole = _out(r, f"{key}/whole", f"{name} on a batch of shape {tuple(x.shape)}")
    for i in range(x.shape[0]):
        alone = _out(r, f"{key}/alone{i}", f"{name} on example {i} alone")
        if not close(alone, whole[i:i + 1], 1e-10, 1e-8):
            raise Fail(f"{name}: example {i} of a batch of shape {tuple(x.shape)} gives a different output on its own "
                       f"(a batch of 1) than inside the batch: its statistics must come from that example alone, not "
                       f"from the batch")
    changed = _out(r, f"{key}/changed", f"{name} on a batch with the other examples changed")
    if not close(changed[:1], whole[:1], 1e-10, 1e-8):
        raise Fail(f"{name}: changing the other examples of the batch changed example 0's output: its statistics must "
                   f"come from that example alone")
    expect_normalised(whole, x, normalised, name, f"{name} on a batch of shape {tuple(x.shape)}")


def expect_train_equals_eval(r: Records, key: str, x: Tensor, name: str, normalised: list[Tensor]) -> None:
    """Training- and eval-mode outputs (after training forwards, with and without grad mode) are the same, and
    normalised (`normalised`: expect_normalised's candidates)."""
    for warmup in range(3):
        expect_no_error(r.get(f"{key}/warmup{warmup}"), f"{name} in training mode")
    train = _out(r, f"{key}/train", f"{name} in training mode")
    eval_ = _out(r, f"{key}/eval", f"{name} in eval mode")
    no_grad = _out(r, f"{key}/eval_no_grad", f"{name} in eval mode under torch.no_grad()")
    if not close(train, eval_, 1e-12, 1e-10):
        raise Fail(f"{name}: the eval-mode output differs from the training-mode output on the same input (input shape "
                   f"{tuple(x.shape)}): this normalization uses each example's own statistics in both modes and keeps "
                   f"no running statistics")
    if not close(eval_, no_grad, 1e-12, 1e-10):
        raise Fail(f"{name}: the output changes under torch.no_grad(): it must not depend on grad mode")
    expect_no_buffers(r.get(f"{key}/buffers"), name)
    expect_normalised(train, x, normalised, name, f"{name} in training mode, input shape {tuple(x.shape)}")


def _by_channel(t: Tensor) -> Tensor:
    """(C, everything else): one row per channel (dim 1)."""
    return t.detach().double().transpose(0, 1).reshape(t.shape[1], -1)


def _fit(out: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """out and z by channel, each row less its mean, and the per-channel scale and shift that best map z onto out
    (least squares over examples and positions)."""
    o, zz = _by_channel(out), _by_channel(z)
    oc, zc = o - o.mean(1, keepdim=True), zz - zz.mean(1, keepdim=True)
    scale = (zc * oc).sum(1) / (zc * zc).sum(1).clamp_min(1e-300)
    return oc, zc, scale, o.mean(1) - scale * zz.mean(1)


def per_channel_fit(out: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """The per-channel scale and shift that best map z onto out (least squares over examples and positions)."""
    return _fit(out, z)[2:]


def fit_residual(out: Tensor, z: Tensor) -> float:
    """The share of out's spread (per channel, dim 1) that no per-channel scale and shift of z explains: 0 when out
    is z scaled and shifted channel by channel, near 1 when it has nothing to do with z."""
    oc, zc, scale, _ = _fit(out, z)
    left = oc - scale[:, None] * zc
    total = (oc * oc).sum()
    if total <= 1e-24:  # a constant output explains nothing unless the normalised input is constant too
        return 0.0 if (zc * zc).sum() <= 1e-24 else 1.0
    return float(((left * left).sum() / total).sqrt())


NORMALISED = 0.1  # the largest fit_residual of an output that counts as normalised (eps or variance slips: < 0.08)


def expect_normalised(out: object, x: Tensor, normalised: list[Tensor], name: str, what: str) -> None:
    """A property (batch independence, train == eval, gradients) earns its points only on an output that normalises:
    `out` must be one of `normalised` (the contract's normalization of x first, then other groupings and slips),
    scaled and shifted per channel, and not x itself scaled and shifted. A layer that returns x, or only scales and
    shifts it, has every such property trivially; on an input where the right answer is also a scale and shift of
    x (one example whose groups are whole channels), nothing can tell them apart and the gate stands aside."""
    out = tensor(out, what)
    if out.shape != x.shape or not torch.isfinite(out).all():
        raise Fail(f"{what}: expected a finite output of shape {tuple(x.shape)}; got {summary(out)}")
    does_nothing = fit_residual(out, x) <= NORMALISED  # x itself, scaled and shifted per channel
    if does_nothing and fit_residual(normalised[0], x) <= NORMALISED:
        return  # on this input the right answer is itself a scale and shift of x: nothing to tell them apart
    if not does_nothing and min(fit_residual(out, z) for z in normalised) <= NORMALISED:
        return
    if close(out, x, 1e-9, 1e-7):
        found = "your layer returns its input unchanged"
    elif fit_residual(out, x) <= 1e-6:
        found = "your layer only scales and shifts its input (x * scale + shift) and never normalises it"
    else:
        found = ("the output is not a normalisation of the input: no group of values has had its own mean subtracted "
                 "and been divided by its own standard deviation")
    raise Fail(f"{what}: {found}. This test checks a property of a normalization, so it counts only for a layer that "
               f"normalises: {name} must return (x - mean) / sqrt(var + eps), scaled and shifted (see test_output).")


LAYOUT_WHAT = {"channels_last": "a channels_last input (x.contiguous(memory_format=torch.channels_last))",
               "transposed": "a transposed input (a view made by .transpose(2, 3))"}
def layout_failure(value: object, kind: str) -> None:
    """A recorded call on an input in another memory layout (course_recorder.inputs.laid_out) that raised: Fail,
    naming .view() when that is what refused it."""
    if isinstance(value, Raised) and not value.is_a("DelegationError"):
        raise Fail(f"{LAYOUT_WHAT[kind]} of the right shape made the layer raise {value}{layout_hint(value)}",
                   mistake=layout_mistake(value))


def expect_own_parameters(set_first: object, second: dict, starts: dict[str, float], name: str) -> None:
    """Two layers built one after the other, the first then given other values (`set_first`, the recorded
    set_params call): the second's parameters (`second`, as module_facts records them) still hold their starts."""
    if isinstance(set_first, Raised):
        return  # the layer's parameters cannot be set at all: the other checks of this test say why
    for param, start in starts.items():
        value = second.get(param)
        if isinstance(value, Tensor) and not torch.all(value.detach().double() == start):
            raise Fail(f"{name}: giving one layer new values of {' and '.join(starts)} changed another layer's {param} "
                       f"(it should still start as {start:g}): every layer needs parameters of its own. nn.Parameter(t) "
                       f"shares t's memory, so create a new tensor in __init__ (nn.Parameter(torch.ones(...))); never "
                       f"wrap one tensor made once for all layers (a module-level constant or a default argument).")


def expect_layer_gradients(recorded: object, x: Tensor, normalised: list[Tensor], name: str, what: str,
                           reference: dict[str, Tensor], detached: dict[str, Tensor], labels: dict[str, str]) -> None:
    """A layer's recorded gradients (probes.gradients) on an output that normalises (expect_normalised: an identity
    has right gradients too), then compare.expect_gradients, naming detached statistics only when the gradient with
    respect to the input is the one they give (`detached`: the reference's gradients with the mean and variance
    taken as constants)."""
    recorded = expect_no_error(recorded, what)
    if isinstance(recorded, dict) and "output" in recorded:
        expect_normalised(recorded["output"], x, normalised, name, what)
    try:
        expect_gradients(recorded, reference, what, labels)
    except Fail as err:
        grad = recorded.get("x") if isinstance(recorded, dict) else None
        if isinstance(grad, Tensor) and close(grad, detached["x"], 1e-8, 1e-6) and not close(grad, reference["x"], 1e-8, 1e-6):
            raise Fail(f"{err}{naming('norm.detached')}", mistake="norm.detached") from None
        raise


def do_nothing_mistakes(x: Tensor, affine_x: Tensor, affine_only: str, either: str) -> dict[str, Tensor]:
    """The outputs of a layer that returns x, and of one that only scales and shifts it (`affine_x`, the layer's
    mistake `affine_only`); the one mistake `either` when the test's scale and shift make them equal."""
    if close(affine_x, x, 1e-12, 1e-12):
        return {either: x}
    return {"norm.input_returned": x, affine_only: affine_x}


def expect_fresh(params: dict, starts: dict[str, float], built: str) -> None:
    """A layer just built holds its parameters' starting values (not values given to another layer)."""
    for name, start in starts.items():
        value = params.get(name)
        if isinstance(value, Tensor) and not torch.all(value.detach().double() == start):
            shown = f"{value.item():g}" if value.numel() == 1 else summary(value)
            raise Fail(f"a new {built} starts with {name} = {shown}, not {start:g}: another layer's values (the "
                       f"layers share their parameters; test_parameters says more)")

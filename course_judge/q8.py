"""Q8's verdicts: the student's GroupNorm against nn.GroupNorm (torch's own layer, run here in the judge)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from course_judge import forbid, verdict
from course_judge.compare import close, expect_close, expect_no_error, expect_raises, tensor
from course_judge.norms import (LAYOUT_WHAT, do_nothing_mistakes, expect_fresh, expect_layer_gradients,
                                expect_normalised, expect_own_parameters, fit_residual, layout_failure,
                                normalisations, per_channel_fit)
from course_judge.records import Fail, Raised, Records
from course_judge.reference import expect_training, lesson_cnn, reference_losses
from course_recorder import q8
from course_recorder.inputs import random_affine, seeded_input, seeded_normal

Tensor = torch.Tensor
USES = ("groupnorm",)
forbid("Q8", "groupnorm")


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


def _normalise(x: Tensor, grouped: Tensor, axes: tuple[int, ...], eps: float, unbiased: bool = False,
               eps_outside: bool = False) -> Tensor:
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
        "gn.interleaved_groups": interleaved(x, num_groups, eps) * g + b,
        "gn.unbiased_variance": _normalise(x, groups, (2,), eps, unbiased=True) * g + b,
        "norm.eps_outside_sqrt": _normalise(x, groups, (2,), eps, eps_outside=True) * g + b,
        "norm.no_eps": _normalise(x, groups, (2,), 0.0) * g + b,
        "gn.statistics_over_batch": _normalise(x, groups, (0, 2), eps) * g + b,
        "gn.reshape_mixes_examples": _normalise(x, x.reshape(num_groups, -1), (1,), eps) * g + b,
    }
    if weight is not None:
        mistakes["gn.scale_shift_swapped"] = right * channel_view(bias, x.dim()) + channel_view(weight, x.dim())
        mistakes["gn.no_scale_shift"] = right
    mistakes.update(do_nothing_mistakes(x, x * g + b, "gn.input_scaled_shifted", "gn.input_returned_or_scaled"))
    right = right * g + b
    # A mistake that gives the right answer on this input (a stride with one group) must not be named.
    return {mistake: wrong for mistake, wrong in mistakes.items() if not close(wrong, right, atol=1e-6, rtol=1e-5)}


def _listed(t: Tensor) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in t.tolist()) + "]"


def diagnose(x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float):
    """What a wrong GroupNorm output shows, read from the output itself: which channels were grouped together
    (contiguous or strided), and whether the scale and shift are per channel, per group or in another order."""
    channels = x.shape[1]
    size = channels // groups

    def read(out: Tensor) -> str | None:
        if out.shape != x.shape or not torch.isfinite(out).all():
            return None
        candidates = {"contiguous": [_normalise(x, x.reshape(x.shape[0], groups, -1), (2,), e) for e in (eps, 0.0)]}
        if 1 < groups < channels:
            candidates["strided"] = [interleaved(x, groups, e) for e in (eps, 0.0)]
        fits = {name: min(fit_residual(out, z) for z in zs) for name, zs in candidates.items()}
        layout = min(fits, key=fits.get)
        if fits[layout] > 1e-4:
            return None
        if layout == "strided":
            return ("Your output normalises channel c together with channels c + G, c + 2G, ... (a strided grouping, as "
                    "x.view(N, C // G, G, ...) gives); groups are CONTIGUOUS: channels 0..C/G-1 form group 0, the next "
                    "C/G group 1, and so on (x.reshape(N, G, -1)).")
        if weight is None:
            return None
        z = min(candidates["contiguous"], key=lambda c: fit_residual(out, c))
        scale, shift = per_channel_fit(out, z)
        by_group = scale.reshape(groups, size)
        if size > 1 and torch.allclose(by_group, by_group[:, :1].expand_as(by_group), atol=1e-6) and \
                not torch.allclose(scale, weight, atol=1e-6):
            return (f"Your groups are normalised right, but every channel of a group gets the same scale "
                    f"({_listed(by_group[:, 0])} for the {groups} group{'s' if groups > 1 else ''}): weight and bias "
                    f"are per CHANNEL, so channel c is multiplied by weight[c] and shifted by bias[c] (weight "
                    f"{_listed(weight)}).")
        if size > 1 and groups > 1 and torch.allclose(scale.reshape(groups, size), scale[:size].expand(groups, size),
                                                      atol=1e-6) and not torch.allclose(scale, weight, atol=1e-6):
            return (f"Your groups are normalised right, but the channel scales repeat from group to group "
                    f"({_listed(scale[:size])} in every group): weight and bias hold one value per CHANNEL, "
                    f"{channels} of them, channel c taking weight[c] and bias[c].")
        ratio = scale / weight
        if torch.allclose(ratio, ratio[:1].expand_as(ratio), atol=1e-6) and torch.allclose(shift, bias, atol=1e-6):
            return (f"Your groups and your scale and shift are right, but every normalised value is {ratio[0].item():.4g} "
                    f"times what it should be: the variance (or eps) you divide by is off.")
        return (f"Your groups are normalised right, but the scale and shift per channel are off: channel c must be "
                f"multiplied by weight[c] and shifted by bias[c]; your output's channel scales are {_listed(scale)} "
                f"(weight: {_listed(weight)}) and its shifts {_listed(shift)} (bias: {_listed(bias)}).")

    return read


def _set(r: Records, key: str, groups: int, channels: int) -> None:
    found = r.get(key)
    if isinstance(found, Raised):
        raise Fail(f"GroupNorm({groups}, {channels}).weight and .bias must be nn.Parameters of shape ({channels},) (one "
                   f"per CHANNEL, as in nn.GroupNorm, although the statistics are per group); the test could not set "
                   f"them ({found.message})")


@verdict("Q8", "test_parameters")
def parameters(r: Records) -> None:
    for groups, channels in q8.PARAMETER_CASES:
        facts = r.get(f"case{groups}_{channels}")
        attributes = facts["attributes"]
        stored = tuple(attributes.get(k) for k in ("num_groups", "num_channels", "eps", "affine"))
        if stored != (groups, channels, 1e-5, True):
            raise Fail("store the arguments as self.num_groups, self.num_channels, self.eps and self.affine "
                       f"(GroupNorm({groups}, {channels}) holds {stored})")
        params = facts["parameters"]
        for name, start in (("weight", torch.ones(channels)), ("bias", torch.zeros(channels))):
            value = params.get(name)
            if not isinstance(value, Tensor):
                raise Fail(f"GroupNorm.{name} must be an nn.Parameter")
            if tuple(value.shape) != (channels,):
                extra = (" You made one per group; GroupNorm's weight and bias are per CHANNEL, as in nn.GroupNorm."
                         if value.numel() == groups else "")
                raise Fail(f"GroupNorm({groups}, {channels}).{name} should have shape ({channels},), got "
                           f"{tuple(value.shape)}.{extra}")
            if value.dtype != torch.float32:
                raise Fail(f"GroupNorm.{name} should start as float32, got {value.dtype}")
            if not torch.equal(value, start):
                raise Fail(f"GroupNorm.{name} must start as {'ones' if name == 'weight' else 'zeros'}")
        if set(params) != {"weight", "bias"}:
            raise Fail(f"the only parameters must be weight and bias, got {sorted(params)}")
        if facts["buffers"]:
            raise Fail("GroupNorm keeps no running statistics: it should have no buffers")
    if r.get("eps")["attributes"].get("eps") != 0.5:
        raise Fail("store eps as self.eps")
    expect_own_parameters(r.get("first/set"), r.get("second")["parameters"], {"weight": 1.0, "bias": 0.0}, "GroupNorm")


@verdict("Q8", "test_output_matches_nn_groupnorm", uses=USES)
def output(r: Records) -> None:
    shape, groups, eps = q8.FRESH
    x = seeded_input(*shape)
    ones, zeros = torch.ones(shape[1], dtype=x.dtype), torch.zeros(shape[1], dtype=x.dtype)
    expect_fresh(r.get("fresh/facts")["parameters"], {"weight": 1.0, "bias": 0.0}, f"GroupNorm({groups}, {shape[1]})")
    expect_close(r.get("fresh"), torch_group_norm(x, groups, ones, zeros, eps),
                 f"GroupNorm({groups}, {shape[1]}, eps={eps}) against nn.GroupNorm({groups}, {shape[1]}, eps={eps})",
                 mistakes=output_mistakes(x, groups, ones, zeros, eps), diagnose=diagnose(x, groups, ones, zeros, eps))
    for i, (shape, groups, eps) in enumerate(q8.OUTPUT_CASES):
        x = seeded_input(*shape, seed=i)
        weight, bias = random_affine(shape[1], seed=i + 10)
        _set(r, f"case{i}/set", groups, shape[1])
        expected = torch_group_norm(x, groups, weight, bias, eps)
        mistakes = output_mistakes(x, groups, weight, bias, eps)
        for mode in ("train", "eval"):
            expect_close(r.get(f"case{i}/{mode}"), expected,
                         f"{mode}-mode output of GroupNorm({groups}, {shape[1]}, eps={eps}) for an input of shape {shape}",
                         mistakes=mistakes, diagnose=diagnose(x, groups, weight, bias, eps))
    for layout, shape, groups, eps, seed in q8.LAYOUTS:
        x = seeded_input(*shape, seed=seed)
        weight, bias = random_affine(shape[1], seed=seed + 10)
        _set(r, f"{layout}/set", groups, shape[1])
        layout_failure(r.get(layout), layout)
        expect_close(r.get(layout), torch_group_norm(x, groups, weight, bias, eps),
                     f"GroupNorm({groups}, {shape[1]}, eps={eps}) on {LAYOUT_WHAT[layout]} of shape {shape}",
                     mistakes=output_mistakes(x, groups, weight, bias, eps), diagnose=diagnose(x, groups, weight, bias, eps))


def gn_normalised(x: Tensor, groups: int, eps: float) -> list[Tensor]:
    """x normalised in contiguous groups or, the wrong grouping but still a normalization, strided ones, per channel
    or per example (norms.normalisations); with and without eps and the slips test_output names. Statistics over
    the batch are not among them: per channel they are a scale and shift of the input, which a layer that does
    nothing also gives."""
    n, c = x.shape[:2]
    found = [_normalise(x, x.reshape(n, groups, -1), (2,), eps)]  # the contract's first (norms.expect_normalised)
    found += normalisations(x, eps, (tuple(range(2, x.dim())), tuple(range(1, x.dim()))))
    for e in (eps, 0.0):
        for unbiased in (False, True):
            for outside in (False, True):
                found.append(_normalise(x, x.reshape(n, groups, -1), (2,), e, unbiased, outside))
                found.append(_normalise(x, x.reshape(n, c // groups, groups, -1), (1, 3), e, unbiased, outside))
    return found


@verdict("Q8", "test_equivalences", uses=USES)
def equivalences(r: Records) -> None:
    shape, seed = q8.EQUIVALENCE_X
    x = seeded_input(*shape, seed=seed)
    ones, zeros = torch.ones(6, dtype=x.dtype), torch.zeros(6, dtype=x.dtype)
    expect_close(r.get("instance"), F.instance_norm(x, eps=0.5), "GroupNorm(6, 6, eps=0.5) against F.instance_norm(eps=0.5)",
                 mistakes=output_mistakes(x, 6, ones, zeros, 0.5))
    expect_close(r.get("layer"), F.layer_norm(x, x.shape[1:], eps=0.5),
                 "GroupNorm(1, 6, eps=0.5) against F.layer_norm(eps=0.5) over (C, H, W)",
                 mistakes=output_mistakes(x, 1, ones, zeros, 0.5))
    for i, (shape, eps) in enumerate(q8.EQUIVALENCE_CASES):
        x = seeded_input(*shape, seed=i + 20)
        channels = shape[1]
        weight, bias = random_affine(channels, seed=i + 30)
        _set(r, f"case{i}/instance/set", channels, channels)
        expect_close(r.get(f"case{i}/instance"), F.instance_norm(x, weight=weight, bias=bias, eps=eps),
                     f"GroupNorm({channels}, {channels}, eps={eps}) against F.instance_norm on an input of shape {shape}",
                     mistakes=output_mistakes(x, channels, weight, bias, eps), diagnose=diagnose(x, channels, weight, bias, eps))
        _set(r, f"case{i}/layer/set", 1, channels)
        spread = (channels,) + (1,) * (x.dim() - 2)
        expected = F.layer_norm(x, x.shape[1:], weight.reshape(spread).expand(x.shape[1:]),
                                bias.reshape(spread).expand(x.shape[1:]), eps=eps)
        expect_close(r.get(f"case{i}/layer"), expected,
                     f"GroupNorm(1, {channels}, eps={eps}) against F.layer_norm over (C, ...) on an input of shape {shape}",
                     mistakes=output_mistakes(x, 1, weight, bias, eps), diagnose=diagnose(x, 1, weight, bias, eps))


@verdict("Q8", "test_contiguous_groups", uses=USES)
def contiguous_groups(r: Records) -> None:
    for i, (shape, groups) in enumerate(q8.CONTIGUOUS_CASES):
        x = seeded_input(*shape, seed=i + 40)
        what = f"GroupNorm({groups}, {shape[1]}, eps=0) on an input of shape {shape}"
        out = tensor(r.get(f"case{i}"), what)
        if out.shape != x.shape:
            raise Fail(f"{what}: expected shape {tuple(x.shape)}, got {tuple(out.shape)}")
        rows = out.double().reshape(shape[0], groups, -1)
        mean, var = rows.mean(-1), rows.var(-1, correction=0)
        if torch.allclose(mean, torch.zeros_like(mean), atol=1e-8) and torch.allclose(var, torch.ones_like(var), atol=1e-8):
            continue
        message = (f"{what}: each example's group of {shape[1] // groups} neighbouring channels should have mean 0 and "
                   f"variance 1; got means {mean.flatten()[:4].tolist()} and variances {var.flatten()[:4].tolist()}")
        values = x[0].numel() // groups
        if torch.allclose(var, torch.full_like(var, (values - 1) / values), atol=1e-8):
            message += (f"\nEvery variance is {values - 1}/{values}: you normalised with the unbiased variance (divide "
                        f"by n-1); the contract says the biased variance (divide by n = {values}).")
        elif torch.allclose(out.double(), interleaved(x, groups, 0.0), atol=1e-6):
            message += ("\nYou grouped the channels with a stride (channel c in group c % num_groups, as "
                        "x.view(N, C // G, G, ...) does, an interleaved grouping); groups are CONTIGUOUS: use "
                        "x.view(N, G, C // G, ...).")
        raise Fail(message)


def _same(a: object, b: object, what: str, hint: str = "") -> None:
    a, b = tensor(expect_no_error(a, what), what), tensor(expect_no_error(b, what), what)
    if not close(a, b, 1e-8, 1e-8):
        raise Fail(f"{what}: the outputs differ (largest difference "
                   f"{(a.double() - b.double()).abs().max().item() if a.shape == b.shape else 'shapes differ'})"
                   + (f"\nHint: {hint}" if hint else ""))


@verdict("Q8", "test_batch_independence", uses=USES)
def batch_independence(r: Records) -> None:
    whole = tensor(expect_no_error(r.get("first/whole"), "GroupNorm(3, 6)"), "the output")
    _same(r.get("first/alone"), whole[1:2], "the output for example 1 alone vs within its batch of 4",
          hint="the statistics must be per example: do not reduce over the batch (dim 0) or reshape in a way that "
               "mixes examples")
    for i, (shape, groups) in enumerate(q8.INDEPENDENCE_CASES):
        full = tensor(expect_no_error(r.get(f"case{i}/whole"), f"GroupNorm({groups}, {shape[1]})"), "the output")
        for n in range(shape[0]):
            _same(r.get(f"case{i}/alone{n}"), full[n:n + 1],
                  f"GroupNorm({groups}, {shape[1]}): the output for example {n} alone vs within its batch of {shape[0]} "
                  f"(the statistics must be per example: do not reduce over the batch or reshape in a way that mixes "
                  f"examples)")
        _same(r.get(f"case{i}/moved"), full,
              f"GroupNorm({groups}, {shape[1]}, eps=0) after multiplying one group of one example by 3 and adding 5 "
              f"(each group is normalised with its own statistics, so nothing should change)")
        x = seeded_input(*shape, seed=i + 50)
        expect_normalised(full, x, gn_normalised(x, groups, 0.0), "GroupNorm", f"GroupNorm({groups}, {shape[1]}, eps=0) "
                          f"on an input of shape {shape}")


@verdict("Q8", "test_affine_false", uses=USES)
def affine_false(r: Records) -> None:
    facts = r.get("facts")
    if facts["attributes"].get("weight", "missing") is not None or facts["attributes"].get("bias", "missing") is not None:
        raise Fail("with affine=False, weight and bias must be None")
    if facts["parameters"]:
        raise Fail("with affine=False the layer must have no parameters")
    for i, (shape, groups, eps) in enumerate(q8.AFFINE_FALSE_CASES):
        case = r.get(f"case{i}/facts")
        if case["attributes"].get("affine") is not False:
            raise Fail("store affine as self.affine")
        if case["state_dict"]:
            raise Fail(f"with affine=False the state_dict must be empty, as nn.GroupNorm's is; it holds {case['state_dict']}")
        x = seeded_input(*shape, seed=i + 60)
        expect_close(r.get(f"case{i}"), torch_group_norm(x, groups, None, None, eps),
                     f"output of GroupNorm({groups}, {shape[1]}, eps={eps}, affine=False), input shape {shape}",
                     mistakes=output_mistakes(x, groups, None, None, eps))


@verdict("Q8", "test_clear_errors")
def clear_errors(r: Records) -> None:
    for groups, channels, with_affine in q8.BAD_CONSTRUCTIONS:
        what = f"GroupNorm({groups}, {channels}{'' if with_affine else ', affine=False'})"
        if groups > channels:
            what += " (more groups than channels)"
        elif (groups, channels) == (4, 6):
            what += " (6 channels do not split into 4 groups)"
        expect_raises(r.get(f"make{groups}_{channels}"), what, mentions=(channels, groups))
    for groups, channels in q8.GOOD_CONSTRUCTIONS:
        made = r.get(f"good{groups}_{channels}")
        if isinstance(made, Raised):
            raise Fail(f"GroupNorm({groups}, {channels}) is valid ({channels} channels split into {groups} groups) but "
                       f"raised {made}")
    for i, (groups, channels, shape) in enumerate(q8.BAD_INPUTS):
        detail = f"a {len(shape)}-D input of shape {shape}" if len(shape) < 4 else f"an input with {shape[1]} channels"
        expect_raises(r.get(f"input{i}"), f"GroupNorm({groups}, {channels}) on {detail}")


def _reference_gradients(x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float,
                         weights: Tensor, detached: bool = False) -> dict[str, Tensor]:
    """Autograd on the contract (`detached`: with the group means and variances taken as constants, a known mistake)."""
    xs = x.clone().requires_grad_(True)
    leaves = [xs]
    w = b = None
    if weight is not None:
        w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        leaves += [w, b]
    if detached:
        rows = xs.reshape(x.shape[0], groups, -1)
        mean, var = rows.detach().mean(2, keepdim=True), rows.detach().var(2, keepdim=True, correction=0)
        out = ((rows - mean) / (var + eps).sqrt()).reshape(x.shape)
        if w is not None:
            out = out * channel_view(w, x.dim()) + channel_view(b, x.dim())
    else:
        out = F.group_norm(xs, groups, w, b, eps)
    grads = torch.autograd.grad((out * weights).sum(), leaves)
    found = {"output": out.detach(), "x": grads[0]}
    if weight is not None:
        found.update(weight=grads[1], bias=grads[2])
    return found


@verdict("Q8", "test_gradients", uses=USES)
def gradients(r: Records) -> None:
    for i, (shape, groups, eps, training) in enumerate(q8.GRADIENT_CASES):
        weight, bias = random_affine(shape[1], seed=i + 70)
        x = seeded_input(*shape, seed=i + 70)
        weights = seeded_normal(*shape, seed=i + 170)
        what = f"GroupNorm({groups}, {shape[1]}, eps={eps}) ({'train' if training else 'eval'} mode, input shape {shape})"
        _gradients(r.get(f"case{i}"), x, groups, weight, bias, eps, weights, what,
                   {"x": "the input x", "weight": "weight (the scale)", "bias": "bias (the shift)"})
    x = seeded_input(2, 4, 3, seed=80)
    _gradients(r.get("no_affine"), x, 2, None, None, 0.5, seeded_normal(2, 4, 3, seed=180),
               "GroupNorm(2, 4, eps=0.5, affine=False)", {"x": "the input x"})


def _gradients(recorded: object, x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float,
               weights: Tensor, what: str, labels: dict[str, str]) -> None:
    """The recorded gradients are right, on an output that normalises (an identity has right gradients too)."""
    expect_layer_gradients(recorded, x, gn_normalised(x, groups, eps), "GroupNorm", what,
                           _reference_gradients(x, groups, weight, bias, eps, weights),
                           _reference_gradients(x, groups, weight, bias, eps, weights, detached=True), labels)


@verdict("Q8", "test_state_dict", uses=USES)
def state_dict(r: Records) -> None:
    theirs = sorted(nn.GroupNorm(3, 6).state_dict())
    if r.get("keys") != theirs:
        raise Fail(f"state_dict keys {r.get('keys')} differ from nn.GroupNorm's {theirs}")
    for i, (groups, channels) in enumerate(q8.STATE_CASES):
        loaded = r.get(f"case{i}/load")
        if isinstance(loaded, Raised):
            raise Fail(f"GroupNorm({groups}, {channels}) cannot load nn.GroupNorm's state_dict (keys weight and bias, "
                       f"shape ({channels},)): {loaded}")
        weight, bias = random_affine(channels, seed=i + 90)
        x = seeded_input(3, channels, 2, 2, seed=i + 90)
        expect_close(r.get(f"case{i}"), torch_group_norm(x, groups, weight, bias, 0.5),
                     f"GroupNorm({groups}, {channels}) loaded from nn.GroupNorm's state_dict")
        back = r.get(f"case{i}/back")
        if isinstance(back, Raised):
            raise Fail(f"nn.GroupNorm({groups}, {channels}) cannot load your layer's state_dict: {back}")
        double = expect_no_error(r.get(f"case{i}/double"), f"GroupNorm({groups}, {channels}).double()")
        if any(tensor(double["parameters"].get(n), n).dtype != torch.float64 for n in ("weight", "bias")):
            raise Fail("after .double(), weight and bias should be float64")
    if r.get("keys_no_affine") != sorted(nn.GroupNorm(2, 4, affine=False).state_dict()):
        raise Fail("with affine=False the state_dict must be empty, as nn.GroupNorm's is")


@verdict("Q8", "test_training_curve", uses=USES)
def training_curve(r: Records) -> None:
    reference = reference_losses("Q8-groupnorm", partial(lesson_cnn, lambda nf: nn.GroupNorm(2, nf)), **q8.TRAINING)
    expect_training(r, "losses", reference,
                    "training the lesson's CNN with your GroupNorm (2 groups per block, lr 0.4, bs 64, 30 steps)", rtol=0.05)

"""Q4's verdicts: the conv block's parts and settings, what it computes, and the CNN built from it training."""

from __future__ import annotations

import torch

from course_judge import forbid, verdict
from course_judge.compare import expect_close, expect_no_error, expect_raises, tensor
from course_judge.records import Fail, Raised, Records
from course_judge.reference import conv_block, expect_training, lesson_cnn, reference_losses
from course_lib.mistakes import naming
from course_recorder import q4

Tensor = torch.Tensor
# torch's own folding (and the fusion module that holds it): the solution does the arithmetic itself.
FUSION = frozenset({"fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval", "fuse_linear_bn_weights",
                    "fusion", "fuse_modules", "fuse_modules_qat", "fuse_conv_bn", "fuse_conv_bn_relu",
                    "fuse_known_modules"})
forbid("Q4", "fold_bn", FUSION, "fold_bn must compute the folded weight and bias itself: torch's fuse_conv_bn_eval "
       "(torch.nn.utils.fusion) is the answer the exercise asks you to write, and the judge's reference.")


def _order_hint(names: list[str], bn: bool) -> str:
    """The line that says what is wrong with a block whose parts (their type names) are not the contract's."""
    if bn and names == ["Conv2d", "BatchNorm2d", "GeneralRelu"]:
        return ("\nThe norm goes after the activation in this lesson's block (conv -> GeneralRelu -> BatchNorm2d). "
                "The paper's order, BatchNorm before the activation, is the common one elsewhere, but this "
                "contract follows the lesson.")
    if not bn and "BatchNorm2d" in names:
        return "\nWith bn=False the block must not contain a BatchNorm: you add the norm even when bn is False."
    if bn and "BatchNorm2d" not in names and any("Norm" in n for n in names):
        return "\nUse nn.BatchNorm2d: activations of a conv layer are (N, C, H, W); BatchNorm1d/3d expect other shapes."
    if bn and "BatchNorm2d" not in names:
        return "\nWith bn=True the block needs an nn.BatchNorm2d after the activation."
    return ""


def _structure(r: Records, key: str, ni: int, nf: int, ks: int, stride: int, bn: bool, kwargs: dict) -> None:
    what = f"conv_layer({ni}, {nf}, ks={ks}, stride={stride}, bn={bn}, **{kwargs})"
    block = r.get(key)
    if isinstance(block, Raised):
        raise Fail(f"{what} raised {block}")
    if not r.has(f"{key}/parts"):
        raise Fail(f"{what}: expected an nn.Module (an nn.Sequential), got {getattr(block, 'type', type(block).__name__)}")
    found = r.get(f"{key}/parts")
    names = [p["type"] for p in found]
    expected = ["Conv2d", "GeneralRelu"] + (["BatchNorm2d"] if bn else [])
    if names != expected:
        raise Fail(f"{what}: expected the parts {expected} in this order, got {names}{_order_hint(names, bn)}")
    conv, relu = found[0], found[1]
    if (conv["in_channels"], conv["out_channels"]) != (ni, nf):
        raise Fail(f"{what}: the Conv2d maps {conv['in_channels']} -> {conv['out_channels']} channels; expected {ni} -> {nf}")
    if tuple(conv["kernel_size"]) != (ks, ks):
        raise Fail(f"{what}: the Conv2d has kernel_size {tuple(conv['kernel_size'])}; expected {(ks, ks)}")
    if tuple(conv["stride"]) != (stride, stride):
        raise Fail(f"{what}: the Conv2d has stride {tuple(conv['stride'])}; expected {(stride, stride)}: pass the stride "
                   f"argument on to nn.Conv2d.")
    if tuple(conv["padding"]) != (ks // 2, ks // 2):
        raise Fail(f"{what}: the Conv2d has padding {conv['padding']}; expected {(ks // 2, ks // 2)}: padding=ks//2 keeps "
                   f"the map size for odd kernels (before the stride).")
    if bn and conv["bias"]:
        raise Fail(f"{what}: the Conv2d has a bias; the lesson's block has none when a BatchNorm follows: use "
                   f"bias=not bn.")
    if not bn and not conv["bias"]:
        raise Fail(f"{what}: the Conv2d has no bias; without a norm the conv keeps its bias (no norm's shift takes "
                   f"its place): use bias=not bn.")
    for key_ in ("leak", "sub", "maxv"):
        if relu.get(key_) != kwargs.get(key_):
            raise Fail(f"{what}: GeneralRelu has {key_}={relu.get(key_)}; expected {kwargs.get(key_)}: pass **kwargs on "
                       f"to GeneralRelu.")
    if bn:
        norm = found[2]
        settings = {"num_features": nf, "eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True}
        for key_, value in settings.items():
            if norm.get(key_) != value:
                raise Fail(f"{what}: the BatchNorm2d has {key_}={norm.get(key_)}; expected {value}")
    out = expect_no_error(r.get(f"{key}/forward"), f"{what} applied to a (4, {ni}, 9, 9) input")
    reference = conv_block(ni, nf, ks, stride=stride, bn=bn, **kwargs).double().train()
    w = q4.block_weights(ni, nf, ks)
    with torch.no_grad():
        reference[0].weight.copy_(w["weight"])
        if not bn:
            reference[0].bias.copy_(w["bias"])
        else:
            reference[2].weight.copy_(w["gamma"])
            reference[2].bias.copy_(w["beta"])
        expected = reference(q4.forward_input(ni))
    expect_close(out, expected, f"{what} applied to a (4, {ni}, 9, 9) input in training mode")


@verdict("Q4", "test_conv_layer_structure")
def structure(r: Records) -> None:
    for i, case in enumerate(q4.WITH_BN):
        _structure(r, f"case{i}", *case)
    try:
        _structure(r, "defaults", 3, 8, 3, 2, True, {})
    except Fail as err:
        raise Fail(f"{err}\n(conv_layer(3, 8) was called with the signature's defaults: ks=3, stride=2, bn=True.)") from None
    expect_no_error(r.get("twice/first"), "conv_layer(4, 6, 3, ...)")
    expect_no_error(r.get("twice/second"), "conv_layer(4, 6, 3, ...) a second time")
    if r.get("twice/same_object") or r.get("twice/shared"):
        shared = "the very same block" if r.get("twice/same_object") else "the same " + ", ".join(r.get("twice/shared"))
        raise Fail(f"conv_layer(4, 6, 3, ...) called twice returned {shared}: the two blocks share their weights, so "
                   f"a model with two equal blocks would train one set of them. Build new layers at every call (no "
                   f"cache, no module-level layer, no default argument holding one).")


@verdict("Q4", "test_conv_layer_without_bn")
def without_bn(r: Records) -> None:
    for i, case in enumerate(q4.WITHOUT_BN):
        _structure(r, f"case{i}", *case)


@verdict("Q4", "test_conv_layer_trains")
def trains(r: Records) -> None:
    reference = reference_losses("Q4-bn", lambda: lesson_cnn(), init=False, **q4.TRAINING)
    expect_training(r, "losses", reference, "the CNN built from your conv_layer", rtol=0.02)


# ---- fold_bn ---------------------------------------------------------------------------------------------------
FOLD_USES = ("fold_bn",)


def _folded(conv, bn, *, scale_var: float = 1.0, eps_outside: bool = False, no_eps: bool = False,
            no_conv_bias: bool = False, no_bn_bias: bool = False, no_mean: bool = False,
            bias_unscaled: bool = False) -> tuple[Tensor, Tensor]:
    """The folded (weight, bias) in float64, written out; the keywords give the known mistakes' versions."""
    w, mean, var = conv.weight.double(), bn.running_mean.double(), bn.running_var.double() * scale_var
    gamma, beta = bn.weight.double(), bn.bias.double()
    eps = 0.0 if no_eps else bn.eps
    scale = gamma / (var.sqrt() + eps) if eps_outside else gamma / (var + eps).sqrt()
    b = torch.zeros_like(mean) if conv.bias is None or no_conv_bias else conv.bias.double()
    shift = (0.0 if no_bn_bias else beta) - (0.0 if no_mean else mean) * scale
    bias = b + shift if bias_unscaled else b * scale + shift
    return w * scale.view(-1, 1, 1, 1), bias


def bn_eval_of_conv(conv, bn, x: Tensor) -> Tensor:
    """The contract itself: bn in eval mode on conv's output (float64), and torch's own fold must agree with it."""
    was = bn.training
    want = bn.eval()(conv(x))
    bn.train(was)
    fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv.eval(), bn.eval())
    bn.train(was)
    if not torch.allclose(fused(x), want, rtol=1e-9, atol=1e-10):
        raise AssertionError("judge bug: fuse_conv_bn_eval and bn.eval()(conv(x)) disagree")
    return want


def _apply(conv, weight: Tensor, bias: Tensor, x: Tensor) -> Tensor:
    return torch.nn.functional.conv2d(x.double(), weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _fold_mistakes(conv, bn, x: Tensor) -> dict[str, Tensor]:
    found = {
        "fold.eps_outside_sqrt": dict(eps_outside=True),
        "fold.no_eps": dict(no_eps=True),
        "fold.conv_bias_forgotten": dict(no_conv_bias=True),
        "fold.conv_bias_unscaled": dict(bias_unscaled=True),
        "fold.bn_bias_forgotten": dict(no_bn_bias=True),
        "fold.mean_not_subtracted": dict(no_mean=True),
    }
    out = {mistake: _apply(conv, *_folded(conv, bn, **kw), x) for mistake, kw in found.items()
           if conv.bias is not None or not mistake.startswith("fold.conv_bias")}
    if conv.in_channels == conv.out_channels and conv.groups == 1:
        _, bias = _folded(conv, bn)
        scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        out["fold.wrong_axis"] = \
            _apply(conv, conv.weight.double() * scale.view(1, -1, 1, 1), bias, x)
    return out


def _variance_factor(conv, bn, weight: object) -> str | None:
    """When the recorded weight is the right one with running_var times one constant k != 1 (the variance rescaled,
    fold.variance_rescaled): what k is."""
    if not isinstance(weight, Tensor) or weight.shape != conv.weight.shape:
        return None
    w = conv.weight.double()
    mask = w.abs() > 1e-3
    ratio = torch.stack([(weight.double()[c][mask[c]] / w[c][mask[c]]).mean() for c in range(w.shape[0])])
    var = (bn.weight.double() / ratio) ** 2 - bn.eps
    k = var / bn.running_var.double()
    if torch.isfinite(k).all() and (k.max() - k.min()).abs() < 1e-4 * k.abs().max() and abs(k.mean().item() - 1) > 1e-3:
        return f"Your folded weight is the right one with running_var multiplied by {k.mean().item():.4g}."
    return None


def _changed(conv, bn, after: dict, what: str) -> None:
    """Fail when fold_bn changed conv or bn (their tensors, or bn's mode)."""
    if after["bn_training"] != bn.training:
        mode = "training" if bn.training else "eval"
        raise Fail(f"{what}: bn was in {mode} mode and fold_bn left it in the other; restore it (was = bn.training; ... "
                   f"bn.train(was)), or never change it: read bn.running_mean and bn.running_var directly.")
    for owner, module in (("bn", bn), ("conv", conv)):
        for name, value in module.state_dict().items():
            got = after[owner].get(name)
            if not isinstance(got, Tensor) or got.shape != value.shape or not torch.equal(got.double(), value.double()):
                extra = ""
                if owner == "bn" and name in ("running_mean", "running_var", "num_batches_tracked"):
                    extra = (" bn ran in TRAINING mode on a batch: training mode normalises with the batch's statistics "
                             "(not the running ones) and updates the running statistics. Fold with bn.running_mean "
                             "and bn.running_var, as bn.eval() does.")
                raise Fail(f"{what}: fold_bn changed {owner}.{name}; conv and bn must be left as they were (build a "
                           f"new Conv2d, no in-place edits).{extra}")


def _fold_case(r: Records, i: int, case: tuple) -> None:
    ni, nf, ks, stride, padding, groups, conv_bias, eps, training, dtype = case
    conv, bn, x = q4.fold_pair(case)
    what = (f"fold_bn(Conv2d({ni}, {nf}, {ks}, stride={stride}, padding={padding}, groups={groups}, bias={conv_bias}), "
            f"BatchNorm2d({nf}, eps={eps}) in {'training' if training else 'eval'} mode, {dtype})")
    fused = expect_no_error(r.get(f"case{i}"), what)
    if not r.has(f"case{i}/type"):
        raise Fail(f"{what}: expected a new nn.Conv2d, got {getattr(fused, 'type', type(fused).__name__)}")
    if not r.get(f"case{i}/plain"):
        raise Fail(f"{what}: expected a plain nn.Conv2d (no subclass, no hooks: the folded conv alone computes "
                   f"bn.eval()(conv(x))), got {r.get(f'case{i}/type')}")
    if r.get(f"case{i}/bias") is None:
        raise Fail(f"{what}: the folded conv has no bias; it needs one (the norm's shift and the running mean go there): "
                   f"bias=True, or assign an nn.Parameter to fused.bias.")
    after = r.get(f"case{i}/after")
    _changed(conv, bn, after, what)
    with torch.no_grad():
        c64, b64, _ = q4.fold_pair(case)  # float64 copies for the reference (Module.double() works in place)
        want = bn_eval_of_conv(c64.double(), b64.double(), x.double())
        mistakes = _fold_mistakes(conv, bn, x)
    weight = r.get(f"case{i}/weight")
    if isinstance(weight, Tensor) and weight.dtype != dtype:
        raise Fail(f"{what}: the folded weight is {weight.dtype}; keep the conv's dtype ({dtype})")
    out = expect_no_error(r.get(f"case{i}/out"), f"{what}, the folded conv applied to a {tuple(x.shape)} input")
    tol = dict(atol=1e-10, rtol=1e-7) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-4)
    got = tensor(out, what)
    try:
        expect_close(got.double(), want,
                     f"{what}, the folded conv applied to a {tuple(x.shape)} input (compared with bn.eval()(conv(x)))",
                     mistakes=mistakes, dtype=False, **tol)
    except Fail as err:
        factor = None if err.mistake else _variance_factor(conv, bn, weight)
        if factor:
            raise Fail(f"{err}\n{factor}{naming('fold.variance_rescaled')}", mistake="fold.variance_rescaled") from None
        raise


@verdict("Q4", "test_fold_bn_output", uses=FOLD_USES)
def fold_output(r: Records) -> None:
    for i, case in enumerate(q4.FOLD_CASES):
        _fold_case(r, i, case)


@verdict("Q4", "test_fold_bn_leaves_inputs", uses=FOLD_USES)
def fold_inputs(r: Records) -> None:
    for i, case in enumerate(q4.FOLD_CASES[:3]):
        conv, bn, _ = q4.fold_pair(case)
        what = f"fold_bn on case {i} (bn in {'training' if bn.training else 'eval'} mode)"
        expect_no_error(r.get(f"case{i}"), what)
        _changed(conv, bn, r.get(f"case{i}/after"), what)
        if r.get(f"case{i}/shared") or r.get(f"case{i}/shared_bn"):
            raise Fail(f"{what}: the folded conv shares tensors with conv or bn (or is conv itself); return a NEW "
                       f"Conv2d with weights of its own (copy.deepcopy(conv), or a new nn.Conv2d with new Parameters).")


@verdict("Q4", "test_fold_bn_errors", uses=FOLD_USES)
def fold_errors(r: Records) -> None:
    for i, (out, features, tracked) in enumerate(q4.FOLD_ERRORS):
        if tracked:
            expect_raises(r.get(f"case{i}"), f"fold_bn(Conv2d(3, {out}, 3), BatchNorm2d({features}))",
                          mentions=(out, features))
        else:
            expect_raises(r.get(f"case{i}"), f"fold_bn(Conv2d(3, {out}, 3), BatchNorm2d({features}, "
                          f"track_running_stats=False)) (no running statistics to fold)")

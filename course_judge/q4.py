"""Q4's verdicts: the conv block's parts and settings, what it computes, and the CNN built from it training."""

from __future__ import annotations

import torch

from course_judge import verdict
from course_judge.compare import expect_close, expect_no_error
from course_judge.records import Fail, Raised, Records
from course_judge.reference import conv_block, expect_training, lesson_cnn, reference_losses
from course_recorder import q4

Tensor = torch.Tensor


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
        message = f"{what}: expected the parts {expected} in this order, got {names}"
        if bn and names == ["Conv2d", "BatchNorm2d", "GeneralRelu"]:
            message += ("\nThe norm goes after the activation in this lesson's block (conv -> GeneralRelu -> BatchNorm2d). "
                        "The paper's order, BatchNorm before the activation, is the common one elsewhere, but this "
                        "contract follows the lesson.")
        elif not bn and "BatchNorm2d" in names:
            message += "\nWith bn=False the block must not contain a BatchNorm: you add the norm even when bn is False."
        elif bn and "BatchNorm2d" not in names and any("Norm" in n for n in names):
            message += "\nUse nn.BatchNorm2d: activations of a conv layer are (N, C, H, W); BatchNorm1d/3d expect other shapes."
        elif bn and "BatchNorm2d" not in names:
            message += "\nWith bn=True the block needs an nn.BatchNorm2d after the activation."
        raise Fail(message)
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

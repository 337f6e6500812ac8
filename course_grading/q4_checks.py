"""Hidden-test helpers for Q4 (the conv block with nn.BatchNorm2d): the reference block and structure checks."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import nn

from course_grading.checks import expect_close
from course_lib import GeneralRelu, get_cnn_model

NFS = [8, 16, 32, 64, 64]
RELU_KWARGS = {"leak": 0.1, "sub": 0.4, "maxv": 6.0}


def reference_conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True, **kwargs) -> nn.Sequential:
    """The lesson's block: conv (bias only without a norm) -> GeneralRelu -> nn.BatchNorm2d."""
    layers: list[nn.Module] = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn), GeneralRelu(**kwargs)]
    if bn:
        layers.append(nn.BatchNorm2d(nf, eps=1e-5, momentum=0.1))
    return nn.Sequential(*layers)


_KINDS = (nn.Conv2d, GeneralRelu, nn.modules.batchnorm._BatchNorm, nn.modules.batchnorm._NormBase)


def _parts(block: nn.Module) -> list[nn.Module]:
    """The block's convolutions, activations and norms in the order they were registered (at any depth)."""
    return [m for m in block.modules() if m is not block and isinstance(m, _KINDS)]


def _names(parts: list[nn.Module]) -> list[str]:
    return [type(m).__name__ for m in parts]


def check_block(conv_layer: Callable[..., nn.Module], ni: int, nf: int, ks: int, stride: int, bn: bool,
                **kwargs) -> None:
    """The student's block has the lesson's parts, in order, with the stated settings, and computes the same."""
    what = f"conv_layer({ni}, {nf}, ks={ks}, stride={stride}, bn={bn}, **{kwargs})"
    block = conv_layer(ni, nf, ks, stride=stride, bn=bn, **kwargs)
    if not isinstance(block, nn.Module):
        raise AssertionError(f"{what}: expected an nn.Module (an nn.Sequential), got {type(block).__name__}")
    parts = _parts(block)
    expected = ["Conv2d", "GeneralRelu"] + (["BatchNorm2d"] if bn else [])
    names = _names(parts)
    if names != expected:
        message = f"{what}: expected the parts {expected} in this order, got {names}"
        if bn and names == ["Conv2d", "BatchNorm2d", "GeneralRelu"]:
            message += "\nThe norm goes after the activation in this lesson (conv -> GeneralRelu -> BatchNorm2d)."
        elif not bn and "BatchNorm2d" in names:
            message += "\nWith bn=False the block must have no BatchNorm2d: you add the norm even when bn is False."
        elif bn and "BatchNorm2d" not in names and any("BatchNorm" in n for n in names):
            message += ("\nUse nn.BatchNorm2d: activations of a conv layer are (N, C, H, W); "
                        "BatchNorm1d/3d expect other shapes.")
        elif bn and "BatchNorm2d" not in names:
            message += "\nWith bn=True the block needs an nn.BatchNorm2d after the activation."
        raise AssertionError(message)
    conv, relu = parts[0], parts[1]
    if conv.in_channels != ni or conv.out_channels != nf:
        raise AssertionError(f"{what}: the Conv2d maps {conv.in_channels} -> {conv.out_channels} channels; expected {ni} -> {nf}")
    if conv.kernel_size != (ks, ks):
        raise AssertionError(f"{what}: the Conv2d has kernel_size {conv.kernel_size}; expected {(ks, ks)}")
    if conv.stride != (stride, stride):
        raise AssertionError(f"{what}: the Conv2d has stride {conv.stride}; expected {(stride, stride)}: "
                             f"pass the stride argument on to nn.Conv2d.")
    if conv.padding != (ks // 2, ks // 2):
        raise AssertionError(f"{what}: the Conv2d has padding {conv.padding}; expected {(ks // 2, ks // 2)}: "
                             f"padding=ks//2 keeps the map size for odd kernels (before the stride).")
    if bn and conv.bias is not None:
        raise AssertionError(f"{what}: the Conv2d has a bias; with a BatchNorm after it the bias is useless "
                             f"(the norm subtracts the mean and adds its own beta): use bias=not bn.")
    if not bn and conv.bias is None:
        raise AssertionError(f"{what}: the Conv2d has no bias; without a norm the conv needs its bias: use bias=not bn.")
    for key in ("leak", "sub", "maxv"):
        if getattr(relu, key, None) != kwargs.get(key):
            raise AssertionError(f"{what}: GeneralRelu has {key}={getattr(relu, key, None)}; expected "
                                 f"{kwargs.get(key)}: pass **kwargs on to GeneralRelu.")
    if bn:
        norm = parts[2]
        settings = {"num_features": nf, "eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True}
        for key, value in settings.items():
            if getattr(norm, key) != value:
                raise AssertionError(f"{what}: the BatchNorm2d has {key}={getattr(norm, key)}; expected {value}")
    _check_forward(block, conv, what, ni, nf, ks, stride, bn, kwargs)


def _check_forward(block: nn.Module, conv: nn.Conv2d, what: str, ni: int, nf: int, ks: int, stride: int, bn: bool,
                   kwargs: dict) -> None:
    """Same output as the reference block with the same conv weights (train mode, float64)."""
    torch.manual_seed(0)
    reference = reference_conv_layer(ni, nf, ks, stride=stride, bn=bn, **kwargs).double()
    block = block.double()
    with torch.no_grad():
        conv.weight.copy_(reference[0].weight)
        if bn:
            gamma = torch.rand(nf, dtype=torch.float64) + 0.5
            beta = torch.randn(nf, dtype=torch.float64)
            for norm in (block.modules()):
                if isinstance(norm, nn.BatchNorm2d):
                    norm.weight.copy_(gamma)
                    norm.bias.copy_(beta)
            reference[2].weight.copy_(gamma)
            reference[2].bias.copy_(beta)
        else:
            conv.bias.copy_(reference[0].bias)
    x = torch.randn(4, ni, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2
    block.train()
    reference.train()
    with torch.no_grad():
        expect_close(block(x), reference(x), f"{what} applied to a (4, {ni}, 9, 9) input in training mode")


def cnn_maker(conv_layer: Callable[..., nn.Module]) -> Callable[[], nn.Module]:
    """A function building the lesson's CNN (nfs [8,16,32,64,64], GeneralRelu(0.1, 0.4, 6.)) from a block."""
    data = SimpleNamespace(c=10)
    return lambda: get_cnn_model(data, NFS, conv_layer, **RELU_KWARGS)

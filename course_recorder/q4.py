"""Q4's probes: the student's conv_layer block (its parts and what it computes) and the CNN built from it."""

from __future__ import annotations

import torch
from torch import nn

from course_recorder import recording
from course_recorder.guard import refusing
from course_recorder.inputs import ACTIVATION, cnn_of, random_affine, seeded_input, seeded_normal
from course_recorder.probes import shared_tensors, train

# (ni, nf, ks, stride, bn, kwargs)
WITH_BN = ((3, 8, 5, 2, True, ACTIVATION), (4, 6, 3, 1, True, {"leak": 0.2, "sub": 0.3, "maxv": 5.0}),
           (2, 5, 3, 3, True, {}))
WITHOUT_BN = ((3, 8, 3, 2, False, ACTIVATION), (4, 6, 5, 1, False, {"leak": 0.2}))
TRAINING = dict(steps=30, bs=64, lr=1.0, seed=0)


def parts(block: nn.Module) -> list[nn.Module]:
    """The block's convolutions, activations and norms in the order they were registered (at any depth)."""
    from course_lib import GeneralRelu

    kinds = (nn.Conv2d, GeneralRelu, nn.modules.batchnorm._NormBase)
    return [m for m in block.modules() if m is not block and isinstance(m, kinds)]


def describe(module: nn.Module) -> dict:
    """A part's type and settings."""
    facts = {"type": type(module).__name__}
    for key in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "leak", "sub", "maxv",
                "num_features", "eps", "momentum", "affine", "track_running_stats"):
        if hasattr(module, key):
            facts[key] = getattr(module, key)
    if isinstance(module, nn.Conv2d):
        facts["bias"] = module.bias is not None
    return facts


def block_weights(ni: int, nf: int, ks: int, seed: int = 3) -> dict:
    """The conv weight and bias and the norm's gamma and beta the forward check sets (float64)."""
    gamma, beta = random_affine(nf, seed=seed)
    return {"weight": seeded_normal(nf, ni, ks, ks, seed=seed) * 0.3, "bias": seeded_normal(nf, seed=seed + 1),
            "gamma": gamma, "beta": beta}


def forward_input(ni: int) -> torch.Tensor:
    return seeded_input(4, ni, 9, 9, seed=3)


def _forward(block: nn.Module, ni: int, nf: int, ks: int) -> torch.Tensor:
    """The block's training-mode output in float64 with the forward check's weights."""
    found = parts(block)
    conv = next(m for m in found if isinstance(m, nn.Conv2d))
    w = block_weights(ni, nf, ks)
    block = block.double().train()
    with torch.no_grad():
        conv.weight.copy_(w["weight"])
        if conv.bias is not None:
            conv.bias.copy_(w["bias"])
        for norm in found:
            if isinstance(norm, nn.modules.batchnorm._NormBase) and norm.affine:
                norm.weight.copy_(w["gamma"])
                norm.bias.copy_(w["beta"])
        return block(forward_input(ni))


def _blocks(rec, conv_layer, cases) -> None:
    for i, (ni, nf, ks, stride, bn, kwargs) in enumerate(cases):
        _record_block(rec, f"case{i}", rec.call(f"case{i}", conv_layer, ni, nf, ks, stride=stride, bn=bn, **kwargs),
                      ni, nf, ks)


def _record_block(rec, key: str, block: object, ni: int, nf: int, ks: int) -> None:
    """A block's parts (`key/parts`) and its forward pass (`key/forward`), when conv_layer returned a module."""
    if isinstance(block, nn.Module):
        rec.put(f"{key}/parts", [describe(m) for m in parts(block)])
        rec.call(f"{key}/forward", _forward, block, ni, nf, ks)


def structure(conv_layer) -> None:
    with recording("test_conv_layer_structure") as rec:
        _blocks(rec, conv_layer, WITH_BN)
        # The defaults of the signature: conv_layer(ni, nf) is conv_layer(ni, nf, ks=3, stride=2, bn=True).
        _record_block(rec, "defaults", rec.call("defaults", conv_layer, 3, 8), 3, 8, 3)
        # Two blocks built with the same arguments (as a model with two equal blocks does) hold weights of their own.
        first = rec.call("twice/first", conv_layer, 4, 6, 3, **ACTIVATION)
        second = rec.call("twice/second", conv_layer, 4, 6, 3, **ACTIVATION)
        if isinstance(first, nn.Module) and isinstance(second, nn.Module):
            rec.put("twice/same_object", first is second)
            rec.put("twice/shared", shared_tensors(first, second))


def without_bn(conv_layer) -> None:
    with recording("test_conv_layer_without_bn") as rec:
        _blocks(rec, conv_layer, WITHOUT_BN)


def trains(conv_layer) -> None:
    with recording("test_conv_layer_trains") as rec:
        train(rec, "losses", lambda: cnn_of(conv_layer), init=False, **TRAINING)


# ---- fold_bn (folding a BatchNorm into the convolution before it) ---------------------------------------------
# (ni, nf, ks, stride, padding, groups, conv_bias, eps, bn_training, dtype); seed = 100 + the case's index
FOLD_CASES = ((4, 4, 3, 2, 0, 1, True, 0.1, False, torch.float64), (3, 5, 3, 1, 1, 1, False, 1e-5, True, torch.float64),
              (4, 6, 1, 1, 0, 2, True, 1e-3, True, torch.float64), (2, 3, 3, 1, 1, 1, True, 1e-5, False, torch.float32),
              (6, 6, 3, 1, 2, 3, False, 0.5, True, torch.float64))
# (conv out_channels, bn num_features, track_running_stats)
FOLD_ERRORS = ((4, 5, True), (6, 3, True), (4, 4, False))


def fold_pair(case: tuple) -> tuple[nn.Conv2d, nn.BatchNorm2d, torch.Tensor]:
    """A conv and a BatchNorm with seeded weights and running statistics (set, not computed), and an input."""
    ni, nf, ks, stride, padding, groups, conv_bias, eps, training, dtype = case
    seed = 100 + FOLD_CASES.index(case)
    conv = nn.Conv2d(ni, nf, ks, stride=stride, padding=padding, groups=groups, bias=conv_bias)
    bn = nn.BatchNorm2d(nf, eps=eps)
    gamma, beta = random_affine(nf, seed=seed)
    with torch.no_grad():
        conv.weight.copy_(seeded_normal(*conv.weight.shape, seed=seed) * 0.5)
        if conv_bias:
            conv.bias.copy_(seeded_normal(nf, seed=seed + 1))
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
        bn.running_mean.copy_(seeded_normal(nf, seed=seed + 2) * 2)
        bn.running_var.copy_(seeded_normal(nf, seed=seed + 3).exp() * 0.5)  # positive, some below 1, some above
        bn.num_batches_tracked.fill_(7)
    conv, bn = conv.to(dtype), bn.to(dtype)
    bn.train(training)
    return conv, bn, seeded_input(3, ni, 7, 6, seed=seed).to(dtype)


def _state(conv: nn.Module, bn: nn.Module) -> dict:
    return {"conv": {k: v.detach().clone() for k, v in conv.state_dict().items()},
            "bn": {k: v.detach().clone() for k, v in bn.state_dict().items()}, "bn_training": bn.training,
            "conv_training": conv.training}


def _own_fold(fold_bn):
    """fold_bn with torch's conv-BN fusion helpers refused while it runs (the audit forbids their names)."""
    from torch.nn.utils import fusion

    return refusing(fold_bn, (fusion.fuse_conv_bn_eval, fusion.fuse_conv_bn_weights, fusion.fuse_linear_bn_eval,
                              fusion.fuse_linear_bn_weights), "torch's fuse_conv_bn (torch.nn.utils.fusion)")


def fold_output(fold_bn) -> None:
    fold_bn = _own_fold(fold_bn)
    with recording("test_fold_bn_output") as rec:
        for i, case in enumerate(FOLD_CASES):
            conv, bn, x = fold_pair(case)
            fused = rec.call(f"case{i}", fold_bn, conv, bn)
            rec.put(f"case{i}/after", _state(conv, bn))
            if isinstance(fused, nn.Module):
                rec.put(f"case{i}/type", type(fused).__qualname__)
                rec.put(f"case{i}/plain", type(fused) is nn.Conv2d and not fused._forward_hooks
                        and not fused._forward_pre_hooks)
                weight, bias = getattr(fused, "weight", None), getattr(fused, "bias", None)
                rec.put(f"case{i}/weight", weight.detach().clone() if isinstance(weight, torch.Tensor) else None)
                rec.put(f"case{i}/bias", bias.detach().clone() if isinstance(bias, torch.Tensor) else None)
                with torch.no_grad():
                    rec.call(f"case{i}/out", fused, x)


def fold_inputs(fold_bn) -> None:
    fold_bn = _own_fold(fold_bn)
    with recording("test_fold_bn_leaves_inputs") as rec:
        for i, case in enumerate(FOLD_CASES[:3]):
            conv, bn, _ = fold_pair(case)
            fused = rec.call(f"case{i}", fold_bn, conv, bn)
            rec.put(f"case{i}/after", _state(conv, bn))
            if isinstance(fused, nn.Module):
                rec.put(f"case{i}/shared", fused is conv or bool(shared_tensors(fused, conv)))
                rec.put(f"case{i}/shared_bn", bool(shared_tensors(fused, bn)))


def fold_errors(fold_bn) -> None:
    fold_bn = _own_fold(fold_bn)
    with recording("test_fold_bn_errors") as rec:
        for i, (out, features, tracked) in enumerate(FOLD_ERRORS):
            conv = nn.Conv2d(3, out, 3).double()
            bn = nn.BatchNorm2d(features, track_running_stats=tracked).double().eval()
            rec.call(f"case{i}", fold_bn, conv, bn)

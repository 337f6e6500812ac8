"""The tests' inputs, built the same way by the kernel (to run the student's code) and by the judge (to
compute the right answers): seeded tensors, non-uniform scales and shifts, MNIST batches, initial weights.
Nothing here is an answer."""

from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor


def seeded_input(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """A test input in which every channel and every example has its own offset and scale.

    A reduction over the wrong axes, or statistics shared across what should be separate groups,
    then changes the output by a large amount.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    if len(shape) >= 2:
        view = [shape[0], shape[1]] + [1] * (len(shape) - 2)
        offset = torch.randn(shape[0], 1, generator=g, dtype=torch.float64) * 2 + torch.linspace(-3, 3, shape[1],
                                                                                                  dtype=torch.float64)
        scale = torch.rand(shape[0], 1, generator=g, dtype=torch.float64) + torch.linspace(0.5, 3, shape[1],
                                                                                            dtype=torch.float64)
        x = x * scale.reshape(view) + offset.reshape(view)
    return x.to(dtype)


def random_affine(num_features: int, seed: int = 1, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Non-uniform gamma and beta (never ones and zeros), so a wrong shape or a missing affine shows."""
    g = torch.Generator().manual_seed(seed)
    gamma = torch.rand(num_features, generator=g, dtype=dtype) * 1.5 + 0.5
    beta = torch.randn(num_features, generator=g, dtype=dtype)
    return gamma, beta


def seeded_normal(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Plain standard-normal values (e.g. the weights of a loss whose gradients are compared)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _grading_data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The grading subset of MNIST, normalised with the training statistics, whatever mode the notebook is in."""
    import contextlib
    import os

    from course_lib import get_data, normalize_to

    saved = os.environ.get("COURSE_GRADING_MODE")
    os.environ["COURSE_GRADING_MODE"] = "1"
    try:
        with contextlib.redirect_stdout(None):
            x_train, y_train, x_valid, y_valid = get_data()
    finally:
        if saved is None:
            os.environ.pop("COURSE_GRADING_MODE", None)
        else:
            os.environ["COURSE_GRADING_MODE"] = saved
    x_train, x_valid = normalize_to(x_train, x_valid)
    return x_train, y_train, x_valid, y_valid


def grading_batches(n_steps: int, bs: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """A fixed, seeded sequence of normalised MNIST training batches shaped (bs, 1, 28, 28)."""
    x_train, y_train, _, _ = _grading_data()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x_train), generator=g)
    batches = []
    for step in range(n_steps):
        idx = order[(step * bs) % len(order):][:bs]
        batches.append((x_train[idx].view(-1, 1, 28, 28), y_train[idx]))
    return batches


def grading_valid(n: int) -> tuple[Tensor, Tensor]:
    """The first n validation images of the grading subset, (n, 1, 28, 28), and their labels."""
    _, _, x_valid, y_valid = _grading_data()
    return x_valid[:n].view(-1, 1, 28, 28), y_valid[:n]


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    """The model's convolutions and linear layers, in order (those build_seeded gives the lesson's weights)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def weight_shapes(model: nn.Module) -> list[list[int]]:
    """The shapes of those layers' weights (the judge checks them against the reference model's)."""
    return [list(m.weight.shape) for m in weighted_layers(model)]


NFS = [8, 16, 32, 64, 64]
ACTIVATION = {"leak": 0.1, "sub": 0.4, "maxv": 6.0}


def cnn_of(block) -> nn.Module:
    """The lesson's CNN (10 classes, channels NFS, GeneralRelu with ACTIVATION) built from `block` (conv_layer's
    signature)."""
    from types import SimpleNamespace

    from course_lib import get_cnn_model

    return get_cnn_model(SimpleNamespace(c=10), NFS, block, **ACTIVATION)


def _template(init: bool) -> nn.Module:
    """The lesson's CNN with its norms left out: the conv and linear layers every norm's CNN shares, built as the
    lesson builds them (PyTorch's default init, then init_cnn's Kaiming normal when `init`)."""
    from course_lib import GeneralRelu, init_cnn

    def block(ni: int, nf: int, ks: int = 3, stride: int = 2, **kwargs) -> nn.Module:
        return nn.Sequential(nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=False), GeneralRelu(**kwargs))

    model = cnn_of(block)
    return init_cnn(model) if init else model


def build_seeded(make_model, seed: int, init: bool = True) -> nn.Module:
    """make_model() built after torch.manual_seed(seed), then given the initial weights of the lesson's CNN built
    from the same seed (every conv and linear layer, in order, where the shapes agree).

    The kernel builds the student's model this way and the judge its reference model: both start from the same
    weights whatever the student's layers draw from the random generator.
    """
    torch.manual_seed(seed)
    template = _template(init)
    torch.manual_seed(seed)
    model = make_model()
    with torch.no_grad():
        for src, dst in zip(weighted_layers(template), weighted_layers(model)):
            if src.weight.shape == dst.weight.shape:
                dst.weight.copy_(src.weight)
                if src.bias is not None and dst.bias is not None and src.bias.shape == dst.bias.shape:
                    dst.bias.copy_(src.bias)
    return model


LAYOUTS = ("channels_last", "transposed")


def laid_out(x: Tensor, layout: str) -> Tensor:
    """x's values in another memory layout: `channels_last` (4-D), or `transposed`, a view whose last two dims are
    swapped in memory (not contiguous: `.view` that merges them fails on it, `.reshape` does not)."""
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    raise ValueError(f"unknown layout {layout!r}")

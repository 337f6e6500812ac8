"""The tests' inputs, built the same way by the kernel (to run the student's code) and by the judge (to
compute the right answers): seeded tensors, non-uniform scales and shifts, MNIST batches, initial weights.
Nothing here is an answer."""

from __future__ import annotations

import math

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
    """The model's convolutions and linear layers, in order (what standard_weights initialises)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def weight_shapes(model: nn.Module) -> list[list[int]]:
    """The shapes of those layers' weights (the judge checks them against the reference model's)."""
    return [list(m.weight.shape) for m in weighted_layers(model)]


def standard_weights(model: nn.Module, seed: int) -> nn.Module:
    """Give every conv and linear layer fixed, seeded initial weights (the lesson's init: Kaiming normal with
    a=0.1 and zero biases for convolutions; PyTorch's default uniform init for the linear layer).

    The kernel applies it to the student's model, the judge to its reference model: both start equal.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in weighted_layers(model):
            fan_in = layer.weight[0].numel()
            if isinstance(layer, nn.Conv2d):
                std = math.sqrt(2.0 / (1 + 0.1 ** 2)) / math.sqrt(fan_in)
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * std)
                if layer.bias is not None:
                    layer.bias.zero_()
            else:
                bound = 1 / math.sqrt(fan_in)
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=g) * 2 * bound - bound)
                if layer.bias is not None:
                    layer.bias.copy_(torch.rand(layer.bias.shape, generator=g) * 2 * bound - bound)
    return model

"""Model pieces of the lesson: Lambda, GeneralRelu, the CNN builder, init and seeding."""
from __future__ import annotations

import os
import random
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Lambda", "flatten", "GeneralRelu", "init_cnn", "get_cnn_layers", "get_cnn_model", "set_seed"]


class Lambda(nn.Module):
    """Wrap a plain function as a module so it can sit in nn.Sequential."""

    def __init__(self, func: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.func = func

    def forward(self, x: Tensor) -> Tensor:
        return self.func(x)


def flatten(x: Tensor) -> Tensor:
    """(N, C, 1, 1) -> (N, C): drop everything but the batch dimension."""
    return x.view(x.shape[0], -1)


class GeneralRelu(nn.Module):
    """ReLU with an optional leak, a shift down by `sub` and a cap at `maxv`."""

    def __init__(self, leak: float | None = None, sub: float | None = None, maxv: float | None = None) -> None:
        super().__init__()
        self.leak, self.sub, self.maxv = leak, sub, maxv

    def forward(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(x, self.leak) if self.leak is not None else F.relu(x)
        if self.sub is not None:
            x = x - self.sub
        if self.maxv is not None:
            x = x.clamp_max(self.maxv)
        return x

    def extra_repr(self) -> str:
        return f"leak={self.leak}, sub={self.sub}, maxv={self.maxv}"


def init_cnn(m: nn.Module, uniform: bool = False) -> nn.Module:
    """Kaiming init (a=0.1) of every Conv2d at any depth; zero conv biases. Returns m."""
    init = nn.init.kaiming_uniform_ if uniform else nn.init.kaiming_normal_
    for module in m.modules():  # modules() walks the whole tree, however nested
        if isinstance(module, nn.Conv2d):
            init(module.weight, a=0.1)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return m


def get_cnn_layers(data, nfs: Sequence[int], layer: Callable[..., nn.Module], **kwargs) -> list[nn.Module]:
    """The lesson's CNN: one `layer` block per filter count (5x5 first, then 3x3), pool, flatten, linear."""
    nfs = [1] + list(nfs)
    blocks = [layer(nfs[i], nfs[i + 1], 5 if i == 0 else 3, **kwargs) for i in range(len(nfs) - 1)]
    return blocks + [nn.AdaptiveAvgPool2d(1), Lambda(flatten), nn.Linear(nfs[-1], data.c)]


def get_cnn_model(data, nfs: Sequence[int], layer: Callable[..., nn.Module], **kwargs) -> nn.Sequential:
    """get_cnn_layers wrapped in nn.Sequential."""
    return nn.Sequential(*get_cnn_layers(data, nfs, layer, **kwargs))


def set_seed(seed: int = 42, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and CUDA); optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs this before its first call to be deterministic; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

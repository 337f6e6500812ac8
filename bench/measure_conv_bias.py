"""What dropping a conv's bias changes, for each norm, placed right after the conv or after the activation.

The figures behind Q4's Part A text (and Q3, Q6, Q8's notes on the block): a norm that subtracts each channel's own
mean (BatchNorm, InstanceNorm) right after the conv cancels a per-channel bias exactly (Ioffe & Szegedy 2015, §3.2);
after the lesson's GeneralRelu it does not, and LayerNorm and GroupNorm, which subtract one mean over several
channels, never do. One random batch (64 x 3 x 16 x 16, seed 0), a 3 -> 8 conv with PyTorch's default bias (uniform
within 1/sqrt(fan_in)); prints the largest change of the block's output when the bias is dropped.
Usage: .venv/bin/python bench/measure_conv_bias.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib import GeneralRelu  # noqa: E402

NORMS = {
    "BatchNorm": lambda h: F.batch_norm(h, None, None, training=True, eps=1e-5),
    "LayerNorm (C, H, W)": lambda h: F.layer_norm(h, h.shape[1:], eps=1e-5),
    "InstanceNorm": lambda h: F.instance_norm(h, eps=1e-5),
    "GroupNorm(4)": lambda h: F.group_norm(h, 4, eps=1e-5),
}


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 16, 16)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    act = GeneralRelu(leak=0.1, sub=0.4, maxv=6.)

    def block(norm, order: str, bias: bool) -> torch.Tensor:
        h = F.conv2d(x, conv.weight, conv.bias if bias else None, padding=1)
        return norm(act(h)) if order == "after" else act(norm(h))

    print(f"conv bias: largest |b| = {conv.bias.abs().max().item():.3f}")
    print(f"{'norm':<22}{'after the activation':>22}{'right after the conv':>22}")
    with torch.no_grad():
        for name, norm in NORMS.items():
            after, before = ((block(norm, o, True) - block(norm, o, False)).abs().max().item()
                             for o in ("after", "before"))
            print(f"{name:<22}{after:>22.3g}{before:>22.3g}")


if __name__ == "__main__":
    main()

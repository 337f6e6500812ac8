"""How fast BatchNorm's running statistics follow the data, for momentum 0.1 and 0.01: the figures in Q1's Part C.

The same computation as the experiment cell before Q1's Part C (seed 0: a 1 -> 4 conv, 5x5, stride 2, over the
normalised MNIST training set; 500 random training-mode batches of 16 through two new nn.BatchNorm2d(4) layers), with
the reference channel statistics written out. Prints channel 0's running mean after 10, 30, 100, 300 and 500 batches,
the training set's own mean, the weight 0.9**k and 0.99**k the starting value still has, how much the batches' own
means scatter and the largest step of each running mean from one batch to the next over the last 200 batches.
Usage: .venv/bin/python bench/measure_q1_running_stats.py   (COURSE_GRADING_MODE=1 for the grading subset)
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib import get_data, normalize_to  # noqa: E402


def main() -> None:
    x_train, _, x_valid, _ = get_data()
    x_train, x_valid = normalize_to(x_train, x_valid)
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 5, stride=2, padding=2)
    with torch.no_grad():
        features = conv(x_train.view(-1, 1, 28, 28))
    mean = features.mean(dim=(0, 2, 3))
    var = features.var(dim=(0, 2, 3), correction=0)
    batches = features[torch.randint(len(features), (500, 16))]
    batch_means = batches[:, :, 0].mean(dim=(1, 2, 3))
    print(f"channel 0 of the training set ({len(features)} images): mean {mean[0].item():+.4f}, "
          f"variance {var[0].item():.4f}; the batches' means scatter with standard deviation "
          f"{batch_means.std().item():.4f}")
    for momentum in (0.1, 0.01):
        bn = nn.BatchNorm2d(4, momentum=momentum)
        means = []
        with torch.no_grad():
            for batch in batches:
                bn(batch)
                means.append(bn.running_mean[0].item())
        for k in (10, 30, 100, 300, 500):
            print(f"momentum={momentum:<4}: after {k:3d} batches running_mean {means[k - 1]:+.4f}; the starting "
                  f"value 0 still weighs {(1 - momentum) ** k:.3f}")
        steps = torch.tensor(means[300:]).diff().abs()
        print(f"momentum={momentum:<4}: largest step from one batch to the next over the last 200: "
              f"{steps.max().item():.4f}")

if __name__ == "__main__":
    main()

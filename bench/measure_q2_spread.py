"""How much one example's train-mode BatchNorm output varies with its batch mates: the figures in Q2's Part B.

The same computation as the experiment cell after Q2's Part A (the first normalised MNIST training image, 50 random
batches of mates per batch size, generator seed 0 for each map), with the reference spread written out, on the
image as a 28 x 28 map and on its mean pixel as a 1 x 1 map. Prints the spread per batch size and the factor from
batch size 2 to 256 (1/sqrt(batch size) predicts sqrt(128) = 11.3).
Usage: .venv/bin/python bench/measure_q2_spread.py   (COURSE_GRADING_MODE=1 for the grading subset)
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib import get_data, normalize_to  # noqa: E402

BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def spread(example: torch.Tensor, mate_batches: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    trials = mate_batches.shape[0]
    batches = torch.cat([example.expand(trials, 1, *example.shape), mate_batches], dim=1)
    mean = batches.mean(dim=(1, 3, 4), keepdim=True)
    var = batches.var(dim=(1, 3, 4), keepdim=True, correction=0)
    return ((batches - mean) / (var + eps).sqrt())[:, 0].std(dim=0, correction=0).mean(dim=(1, 2))


def main() -> None:
    x_train, _, x_valid, _ = get_data()
    x_train, x_valid = normalize_to(x_train, x_valid)
    images = x_train.view(-1, 1, 28, 28)
    for name, data in {"28 x 28": images, "1 x 1": images.mean(dim=(2, 3), keepdim=True)}.items():
        example, pool = data[0], data[1:]
        generator = torch.Generator().manual_seed(0)
        spreads = []
        for bs in BATCH_SIZES:
            picks = torch.randint(len(pool), (50, bs - 1), generator=generator)
            spreads.append(spread(example, pool[picks]).item())
        print(f"{name}: " + ", ".join(f"bs {bs}: {s:.4f}" for bs, s in zip(BATCH_SIZES, spreads))
              + f"; from 2 to 256 a factor {spreads[1] / spreads[-1]:.1f}")


if __name__ == "__main__":
    main()

"""One training epoch: course_lib's Runner (the lesson's callbacks) vs a hand-written PyTorch loop.

Same model, data subset, batch size and seed; the two alternate so machine load hits both alike.
Prints a table of per-epoch times (median of the repeats) and the ratio runner / bare (target <= 1.05).
Usage: .venv/bin/python bench/bench_runner.py [--n-train 10000] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.pop("COURSE_GRADING_MODE", None)  # the bench picks its own subset
os.environ.pop("NBGRADER_EXECUTION", None)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from course_lib import (AvgStatsCallback, BatchTransformXCallback, DataBunch, Dataset, DeviceCallback,  # noqa: E402
                        GeneralRelu, Recorder, accuracy, default_device, get_data, get_dls, get_learn_run,
                        get_cnn_model, init_cnn, mnist_view, normalize_to, set_seed)

NFS, BS, LR = [8, 16, 32, 64, 64], 512, 0.4


def block(ni: int, nf: int, ks: int = 3, stride: int = 2) -> nn.Module:
    """The lesson's block with nn.BatchNorm2d (course_lib ships no normalization layers)."""
    return nn.Sequential(nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=False),
                         GeneralRelu(leak=0.1, sub=0.4, maxv=6.), nn.BatchNorm2d(nf))


def runner_epoch(data: DataBunch, seed: int) -> float:
    set_seed(seed)
    cbs = [partial(AvgStatsCallback, accuracy), DeviceCallback, partial(BatchTransformXCallback, mnist_view), Recorder]
    learn, run = get_learn_run(NFS, data, LR, block, cbs=cbs)
    run.logger = lambda line: None  # keep the table readable
    t = time.perf_counter()
    run.fit(1, learn)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def bare_epoch(data: DataBunch, seed: int) -> float:
    """What a student would write by hand: shuffle, step, then validate with loss and accuracy."""
    set_seed(seed)
    device = default_device()
    model = init_cnn(get_cnn_model(data, NFS, block)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x_train, y_train = data.train_ds.x, data.train_ds.y
    x_valid, y_valid = data.valid_ds.x, data.valid_ds.y
    t = time.perf_counter()
    model.train()
    perm = torch.randperm(len(x_train))
    for i in range(0, len(x_train), BS):
        idx = perm[i:i + BS]
        xb, yb = x_train[idx].to(device).view(-1, 1, 28, 28), y_train[idx].to(device)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    tot_loss, tot_acc = torch.zeros((), device=device), torch.zeros((), device=device)
    with torch.no_grad():
        for i in range(0, len(x_valid), 2 * BS):
            xb, yb = x_valid[i:i + 2 * BS].to(device).view(-1, 1, 28, 28), y_valid[i:i + 2 * BS].to(device)
            out = model(xb)
            tot_loss += F.cross_entropy(out, yb) * len(yb)
            tot_acc += accuracy(out, yb) * len(yb)
    float(tot_loss), float(tot_acc)  # the runner prints its stats: sync here too
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-valid", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 avoids oversubscription)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x_train, y_train, x_valid, y_valid = get_data()
    g = torch.Generator().manual_seed(0)
    it = torch.randperm(len(x_train), generator=g)[:args.n_train]
    iv = torch.randperm(len(x_valid), generator=g)[:args.n_valid]
    x_train, x_valid = normalize_to(x_train[it], x_valid[iv])
    data = DataBunch(*get_dls(Dataset(x_train, y_train[it]), Dataset(x_valid, y_valid[iv]), BS), c=10)

    runner_epoch(data, 0), bare_epoch(data, 0)  # warm-up: allocator, kernels, lazy imports
    times: dict[str, list[float]] = {"runner": [], "bare": []}
    for r in range(args.repeats):
        order = [("runner", runner_epoch), ("bare", bare_epoch)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):  # alternate who goes first
            times[name].append(fn(data, seed=r))

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"device: {default_device()}, torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}, "
          f"{args.n_train} train / {args.n_valid} valid images, bs {BS}, {args.repeats} repeats")
    print(f"{'loop':<8}{'median s/epoch':>16}{'min':>9}{'max':>9}")
    for k, v in times.items():
        print(f"{k:<8}{med[k]:>16.3f}{min(v):>9.3f}{max(v):>9.3f}")
    print(f"ratio runner/bare (medians): {med['runner'] / med['bare']:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()

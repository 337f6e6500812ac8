"""RunningBatchNorm against nn.BatchNorm2d at batch size 32: the lesson's last run of 07_batchnorm, for both layers.

The figure behind Q9's note on bigger batches. The lesson ran only RunningBatchNorm at batch size 32 (one epoch, the
learning rate falling linearly from 1.0 to 0.2, a plain ReLU: valid accuracy 0.9818 on a GPU); it never trained
nn.BatchNorm2d in that setting. This runs both, as Q9's last experiment does (its block: conv -> GeneralRelu(0.1,
0.4, 6) -> norm, its data: all 50,000 training images, validated on the 10,000), from the same initial weights, for a
few seeds, on one CPU thread, and prints each run's validation loss and accuracy. RunningBatchNorm is the
contract's reference (course_judge.q9.ReferenceRunningBatchNorm).
Usage: .venv/bin/python bench/measure_rbn_bs32.py [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_judge.q9 import ReferenceRunningBatchNorm  # noqa: E402
from course_lib import (AvgStatsCallback, BatchTransformXCallback, DataBunch, Dataset, GeneralRelu,  # noqa: E402
                        ParamScheduler, Recorder, accuracy, get_data, get_dls, get_learn_run, mnist_view,
                        normalize_to, sched_lin, set_seed)

NFS = [8, 16, 32, 64, 64]


def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True, norm=nn.BatchNorm2d) -> nn.Sequential:
    """Q9's block: conv (no bias) -> GeneralRelu(0.1, 0.4, 6) -> norm(nf)."""
    return nn.Sequential(nn.Conv2d(ni, nf, kernel_size=ks, padding=ks // 2, stride=stride, bias=not bn),
                         GeneralRelu(leak=0.1, sub=0.4, maxv=6.0), norm(nf))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x_train, y_train, x_valid, y_valid = get_data()
    x_train, x_valid = normalize_to(x_train, x_valid)
    train_ds, valid_ds = Dataset(x_train, y_train), Dataset(x_valid, y_valid)
    print(f"batch size 32, one epoch over {len(train_ds)} images, lr 1.0 -> 0.2 (linear), validated on {len(valid_ds)}")
    for seed in args.seeds:
        for name, norm in (("nn.BatchNorm2d", nn.BatchNorm2d), ("RunningBatchNorm", ReferenceRunningBatchNorm)):
            set_seed(seed)
            data = DataBunch(get_dls(train_ds, valid_ds, 32)[0], get_dls(train_ds, valid_ds, 512)[1], c=10)
            learn, run = get_learn_run(NFS, data, 1.0, conv_layer, norm=norm,
                                       cbs=[partial(AvgStatsCallback, accuracy), Recorder,
                                            partial(BatchTransformXCallback, mnist_view),
                                            partial(ParamScheduler, "lr", sched_lin(1.0, 0.2))])
            run.fit(1, learn)
            row = run.avg_stats.history[-1]
            print(f"seed {seed}  {name:17s} valid loss {row['valid_loss']:.4f}  valid accuracy "
                  f"{row['valid_accuracy']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

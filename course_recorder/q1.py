"""Q1's probes: channel_stats and output_in_batch on the hidden tests' inputs."""

from __future__ import annotations

import torch
from torch import nn

from course_recorder import recording
from course_recorder.inputs import LAYOUTS, laid_out, random_affine, seeded_input

Tensor = torch.Tensor

VALUE_CASES = (((5, 3, 4, 6), 0), ((2, 4, 1, 3), 1), ((7, 2, 2, 2), 2))
CONTRACT_X = ((6, 5, 3, 2), 3)
NOT_4D = ((4, 3), (2, 3, 4), (1, 2, 3, 4, 5))
TRAIN_CASES = ((4, 0), (1, 1), (9, 2), (0, 3))  # (batch mates, seed): M may be 0
EVAL_CASES = ((4, 0), (0, 1), (9, 2))
SIDE_EFFECT_CASES = tuple((start, train) for start in (True, False) for train in (True, False))


def make_layer(num_features: int = 3, momentum: float = 0.3, eps: float = 0.5) -> nn.BatchNorm2d:
    """A float64 BatchNorm2d with non-trivial gamma, beta and running statistics (as after some training)."""
    bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum).double()
    gamma, beta = random_affine(num_features, seed=5)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
        bn.running_mean.copy_(torch.randn(num_features, generator=g, dtype=torch.float64) * 2)
        bn.running_var.copy_(torch.rand(num_features, generator=g, dtype=torch.float64) * 3 + 0.5)
        bn.num_batches_tracked.fill_(7)
    return bn


def example_and_mates(num_mates: int, seed: int) -> tuple[Tensor, Tensor]:
    example = seeded_input(1, 3, 2, 2, seed=seed)[0]
    mates = seeded_input(num_mates, 3, 2, 2, seed=seed + 100) if num_mates else torch.empty(0, 3, 2, 2,
                                                                                            dtype=torch.float64)
    return example, mates


def channel_stats_values(channel_stats) -> None:
    with recording("test_channel_stats_values") as rec:
        for i, (shape, seed) in enumerate(VALUE_CASES):
            rec.call(f"case{i}", channel_stats, seeded_input(*shape, seed=seed))


def channel_stats_contract(channel_stats) -> None:
    with recording("test_channel_stats_contract") as rec:
        shape, seed = CONTRACT_X
        x = seeded_input(*shape, seed=seed)
        rec.call("float64", channel_stats, x)
        rec.call("float32", channel_stats, x.float())
        for layout in LAYOUTS:  # the same values in another memory layout
            rec.call(layout, channel_stats, laid_out(x, layout))
        for i, bad in enumerate(NOT_4D):
            rec.call(f"bad{i}", channel_stats, torch.ones(bad))


def _outputs(rec, output_in_batch, cases, train: bool) -> None:
    for i, (num_mates, seed) in enumerate(cases):
        example, mates = example_and_mates(num_mates, seed)
        rec.call(f"case{i}", output_in_batch, make_layer(), example, mates, train)


def output_in_batch_train(output_in_batch) -> None:
    with recording("test_output_in_batch_train") as rec:
        _outputs(rec, output_in_batch, TRAIN_CASES, True)


def output_in_batch_eval(output_in_batch) -> None:
    with recording("test_output_in_batch_eval") as rec:
        _outputs(rec, output_in_batch, EVAL_CASES, False)


def output_in_batch_leaves_layer(output_in_batch) -> None:
    with recording("test_output_in_batch_leaves_layer") as rec:
        for i, (start, train) in enumerate(SIDE_EFFECT_CASES):
            bn = make_layer()
            bn.train(start)
            example, mates = example_and_mates(3, 4)
            rec.call(f"case{i}", output_in_batch, bn, example, mates, train)
            rec.put(f"case{i}/state", dict(bn.state_dict()))
            rec.put(f"case{i}/training", bn.training)

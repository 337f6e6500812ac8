"""Q2's probes: spread_across_batches on the hidden tests' inputs."""

from __future__ import annotations

import torch

from course_recorder import recording
from course_recorder.inputs import laid_out, seeded_input

Tensor = torch.Tensor

# ((trials, mates, channels, height, width), eps or None for the default, seed)
VALUE_CASES = (((5, 2, 3, 2, 2), 0.5, 0), ((4, 1, 2, 3, 2), 0.5, 1), ((6, 3, 4, 1, 1), None, 2),
               ((3, 7, 3, 2, 3), 1e-5, 3))
BAD_CASES = ("an example with a batch dimension (1, C, H, W)", "mate_batches without a trial dimension (M, C, H, W)",
             "mates with 2 channels for an example with 3", "mates of size 2x3 for an example of size 2x2")


def value_inputs(case: tuple) -> tuple[Tensor, Tensor]:
    (t, m, c, h, w), _, seed = case
    return seeded_input(1, c, h, w, seed=seed)[0], seeded_input(t * m, c, h, w, seed=seed + 10).view(t, m, c, h, w)


def contract_inputs() -> tuple[Tensor, Tensor]:
    return seeded_input(1, 3, 2, 2, seed=7)[0], seeded_input(4 * 2, 3, 2, 2, seed=8).view(4, 2, 3, 2, 2)


def bad_inputs() -> list[tuple[Tensor, Tensor]]:
    example, mates = contract_inputs()
    return [(example[None], mates), (example, mates[0]), (example, seeded_input(8, 2, 2, 2).view(4, 2, 2, 2, 2)),
            (example, seeded_input(8, 3, 2, 3).view(4, 2, 3, 2, 3))]


def spread_values(spread) -> None:
    with recording("test_spread_values") as rec:
        for i, case in enumerate(VALUE_CASES):
            example, mates = value_inputs(case)
            args = (example, mates) if case[1] is None else (example, mates, case[1])
            rec.call(f"case{i}", spread, *args)


def spread_contract(spread) -> None:
    with recording("test_spread_contract") as rec:
        example, mates = contract_inputs()
        rec.call("float32", spread, example.float(), mates.float())
        rec.call("alone", spread, example, torch.empty(4, 0, 3, 2, 2, dtype=torch.float64), 0.5)
        rec.call("same", spread, example, mates[:1].expand(4, 2, 3, 2, 2).clone(), 0.5)
        # The same values in other memory layouts: H and W swapped in memory, and mates expanded as the demo does.
        rec.call("transposed", spread, laid_out(example, "transposed"), laid_out(mates, "transposed"), 0.5)
        rec.call("expanded", spread, example, mates[:1].expand(4, 2, 3, 2, 2), 0.5)
        for i, (ex, mb) in enumerate(bad_inputs()):
            rec.call(f"bad{i}", spread, ex, mb)

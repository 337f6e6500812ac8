"""Q8's probes: the student's GroupNorm on the hidden tests' inputs, and the lesson's CNN trained with it."""

from __future__ import annotations

import torch
from torch import nn

from course_recorder import recording
from course_recorder.inputs import laid_out, random_affine, seeded_input, seeded_normal
from course_recorder.probes import gradients, module_facts, own_parameters, set_params, train

OWN = "GroupNorm"
PARAMETER_CASES = ((1, 4), (2, 8), (4, 4), (3, 12))
FRESH = ((4, 6, 3, 3), 3, 0.5)
# (shape, groups, eps); seed = the case's index
OUTPUT_CASES = (((20, 6, 3, 3), 3, 0.5), ((20, 6, 2, 2), 6, 0.5), ((20, 6, 2, 2), 1, 0.5), ((3, 6, 2, 1), 3, 1e-5),
                ((2, 8, 3), 4, 0.5), ((3, 4), 2, 0.5), ((2, 6, 2, 1, 2), 2, 0.5), ((2, 12, 2, 2), 4, 1e-3))
# Inputs the contract accepts whatever their memory layout (course_recorder.inputs.laid_out): (layout, shape, groups,
# eps, seed)
LAYOUTS = (("channels_last", (3, 6, 3, 2), 3, 0.5, 11), ("transposed", (2, 8, 2, 4), 2, 1e-5, 12))
EQUIVALENCE_X = ((5, 6, 4, 4), 0)
EQUIVALENCE_CASES = (((20, 6, 10, 10), 1e-5), ((3, 6, 2, 2), 0.5), ((2, 4, 1, 3), 0.5), ((2, 5, 3), 0.5))  # seed 20+i
CONTIGUOUS_CASES = (((3, 6, 2, 2), 3), ((2, 8, 3, 1), 2), ((2, 8, 2), 4), ((4, 12, 1, 1), 3))  # seed 40+i, eps 0
INDEPENDENCE_FIRST = ((4, 6, 3, 3), 0)
INDEPENDENCE_CASES = (((5, 6, 2, 2), 3), ((3, 4, 3), 2), ((2, 6, 1, 1), 1))  # seed 50+i, eps 0
AFFINE_FALSE_CASES = (((3, 6, 2, 2), 3, 0.5), ((2, 4, 3), 4, 1e-5), ((2, 8, 1, 2), 2, 0.5))  # seed 60+i
BAD_CONSTRUCTIONS = ((4, 6, True), (5, 12, True), (3, 8, False), (16, 8, True))
GOOD_CONSTRUCTIONS = ((1, 1), (1, 7), (7, 7), (4, 12))
BAD_INPUTS = ((2, 4, (2, 6, 3, 3)), (2, 4, (2, 2, 3, 3)), (1, 3, (3, 4)), (1, 3, (3,)))
GRADIENT_CASES = (((2, 6, 2, 1), 3, 0.5, True), ((3, 4, 2), 2, 1e-5, False), ((2, 4, 1, 2), 1, 0.5, True))  # seed 70+i
STATE_CASES = ((3, 6), (2, 8), (5, 5))  # seed 90+i
TRAINING = dict(steps=30, bs=64, lr=0.4, seed=0)


def affine(channels: int, seed: int) -> dict:
    weight, bias = random_affine(channels, seed=seed)
    return {"weight": weight, "bias": bias}


def parameters(GroupNorm) -> None:
    with recording("test_parameters") as rec:
        for groups, channels in PARAMETER_CASES:
            rec.put(f"case{groups}_{channels}", module_facts(GroupNorm(groups, channels)))
        rec.put("eps", module_facts(GroupNorm(2, 4, eps=0.5)))
        own_parameters(rec, lambda: GroupNorm(3, 6), affine(6, 5))


def _output(rec, key: str, gn, x, modes=(True,)) -> None:
    for mode in modes:
        gn.train(mode)
        rec.call(f"{key}/{'train' if mode else 'eval'}", gn, x, own=OWN)


def output(GroupNorm) -> None:
    with recording("test_output_matches_nn_groupnorm") as rec:
        shape, groups, eps = FRESH
        fresh = GroupNorm(groups, shape[1], eps=eps).double()
        rec.put("fresh/facts", module_facts(fresh))
        rec.call("fresh", fresh, seeded_input(*shape), own=OWN)
        for i, (shape, groups, eps) in enumerate(OUTPUT_CASES):
            gn = GroupNorm(groups, shape[1], eps=eps).double()
            rec.call(f"case{i}/set", set_params, gn, affine(shape[1], i + 10))
            _output(rec, f"case{i}", gn, seeded_input(*shape, seed=i), (True, False))
        for layout, shape, groups, eps, seed in LAYOUTS:
            gn = GroupNorm(groups, shape[1], eps=eps).double()
            rec.call(f"{layout}/set", set_params, gn, affine(shape[1], seed + 10))
            rec.call(layout, gn, laid_out(seeded_input(*shape, seed=seed), layout), own=OWN)


def equivalences(GroupNorm) -> None:
    with recording("test_equivalences") as rec:
        shape, seed = EQUIVALENCE_X
        x = seeded_input(*shape, seed=seed)
        rec.call("instance", GroupNorm(6, 6, eps=0.5).double(), x, own=OWN)
        rec.call("layer", GroupNorm(1, 6, eps=0.5).double(), x, own=OWN)
        for i, (shape, eps) in enumerate(EQUIVALENCE_CASES):
            x = seeded_input(*shape, seed=i + 20)
            channels = shape[1]
            for name, groups in (("instance", channels), ("layer", 1)):
                gn = GroupNorm(groups, channels, eps=eps).double()
                rec.call(f"case{i}/{name}/set", set_params, gn, affine(channels, i + 30))
                rec.call(f"case{i}/{name}", gn, x, own=OWN)


def contiguous_groups(GroupNorm) -> None:
    with recording("test_contiguous_groups") as rec:
        for i, (shape, groups) in enumerate(CONTIGUOUS_CASES):
            rec.call(f"case{i}", GroupNorm(groups, shape[1], eps=0.0).double(), seeded_input(*shape, seed=i + 40),
                     own=OWN)


def batch_independence(GroupNorm) -> None:
    with recording("test_batch_independence") as rec:
        shape, _ = INDEPENDENCE_FIRST
        x = seeded_input(*shape)
        gn = GroupNorm(3, 6).double()
        rec.call("first/whole", gn, x, own=OWN)
        rec.call("first/alone", gn, x[1:2].clone(), own=OWN)
        for i, (shape, groups) in enumerate(INDEPENDENCE_CASES):
            x = seeded_input(*shape, seed=i + 50)
            gn = GroupNorm(groups, shape[1], eps=0.0).double()
            rec.call(f"case{i}/whole", gn, x, own=OWN)
            for n in range(shape[0]):
                rec.call(f"case{i}/alone{n}", gn, x[n:n + 1].clone(), own=OWN)
            moved = x.clone()
            size = shape[1] // groups
            moved[-1, :size] = moved[-1, :size] * 3.0 + 5.0  # one group of one example, shifted and scaled
            rec.call(f"case{i}/moved", gn, moved, own=OWN)


def affine_false(GroupNorm) -> None:
    with recording("test_affine_false") as rec:
        rec.put("facts", module_facts(GroupNorm(3, 6, affine=False)))
        for i, (shape, groups, eps) in enumerate(AFFINE_FALSE_CASES):
            gn = GroupNorm(groups, shape[1], eps=eps, affine=False).double()
            rec.put(f"case{i}/facts", module_facts(gn))
            rec.call(f"case{i}", gn, seeded_input(*shape, seed=i + 60), own=OWN)


def clear_errors(GroupNorm) -> None:
    with recording("test_clear_errors") as rec:
        for groups, channels, with_affine in BAD_CONSTRUCTIONS:
            rec.call(f"make{groups}_{channels}", lambda g=groups, c=channels, a=with_affine: GroupNorm(g, c, affine=a) and None)
        for groups, channels in GOOD_CONSTRUCTIONS:
            rec.call(f"good{groups}_{channels}", lambda g=groups, c=channels: GroupNorm(g, c) and None)
        for i, (groups, channels, shape) in enumerate(BAD_INPUTS):
            rec.call(f"input{i}", lambda x, g=groups, c=channels: GroupNorm(g, c).double()(x),
                     seeded_input(*shape, seed=i), own=OWN)


def gradients_probe(GroupNorm) -> None:
    with recording("test_gradients") as rec:
        for i, (shape, groups, eps, training) in enumerate(GRADIENT_CASES):
            gn = GroupNorm(groups, shape[1], eps=eps).double().train(training)
            rec.call(f"case{i}", gradients, gn, seeded_input(*shape, seed=i + 70), affine(shape[1], i + 70),
                     seeded_normal(*shape, seed=i + 170), own=OWN)
        gn = GroupNorm(2, 4, eps=0.5, affine=False).double()
        rec.call("no_affine", gradients, gn, seeded_input(2, 4, 3, seed=80), {}, seeded_normal(2, 4, 3, seed=180),
                 own=OWN)


def state_dict(GroupNorm) -> None:
    with recording("test_state_dict") as rec:
        rec.put("keys", sorted(GroupNorm(3, 6).state_dict()))
        rec.put("keys_no_affine", sorted(GroupNorm(2, 4, affine=False).state_dict()))
        for i, (groups, channels) in enumerate(STATE_CASES):
            theirs = nn.GroupNorm(groups, channels, eps=0.5).double()
            weight, bias = random_affine(channels, seed=i + 90)
            with torch.no_grad():
                theirs.weight.copy_(weight)
                theirs.bias.copy_(bias)
            mine = GroupNorm(groups, channels, eps=0.5).double()
            rec.call(f"case{i}/load", lambda m=mine, t=theirs: m.load_state_dict(t.state_dict()) and None)
            rec.call(f"case{i}", mine, seeded_input(3, channels, 2, 2, seed=i + 90), own=OWN)
            back = nn.GroupNorm(groups, channels, eps=0.5).double()
            rec.call(f"case{i}/back", lambda m=mine, b=back: b.load_state_dict(m.state_dict()) and None)
            rec.call(f"case{i}/double", lambda g=groups, c=channels: module_facts(GroupNorm(g, c).double()))


def training_curve(lesson_cnn) -> None:
    with recording("test_training_curve") as rec:
        train(rec, "losses", lesson_cnn, own=OWN, **TRAINING)

"""Q7's probes: the student's InstanceNorm on the hidden tests' inputs."""

from __future__ import annotations

import torch

from course_recorder import recording
from course_recorder.inputs import laid_out, random_affine, seeded_input, seeded_normal
from course_recorder.probes import gradients, independence, module_facts, own_parameters, set_params, train_and_eval

OWN = "InstanceNorm"
PARAMETER_CASES = ((1, 1e-5), (3, 0.5), (7, 1e-5))
DEFAULT_NF = 4
FRESH = ((3, 2, 3, 2), 0.5, 0)
OUTPUT_CASES = (((3, 2, 3, 2), 0.5, 0), ((2, 3, 1, 3), 1e-5, 1), ((4, 3, 4, 3), 0.5, 2), ((5, 4, 3, 3), 1e-3, 3),
                ((1, 3, 2, 2), 0.5, 4))  # (shape, eps, seed)
FLOAT32 = ((2, 3, 4, 4), 9)
# Inputs the contract accepts whatever their memory layout (course_recorder.inputs.laid_out): (layout, shape, eps, seed)
LAYOUTS = (("channels_last", (3, 4, 3, 2), 0.5, 11), ("transposed", (2, 3, 2, 4), 1e-5, 12))
INDEPENDENCE = (((4, 3, 2, 2), 0.5, 1), ((3, 2, 3, 1), 1e-5, 2))
TRAIN_EVAL = (((4, 3, 2, 2), 0.5, 5), ((2, 5, 3, 1), 1e-5, 6))
ONE_BY_ONE = ((3, 4, 1e-5, 0), (1, 3, 0.5, 1), (5, 2, 1e-5, 2))  # (n, nf, eps, seed)
GRADIENT_CASES = (((2, 3, 2, 1), 0.5, 0, True), ((3, 2, 2, 2), 1e-5, 1, False))
ERROR_CASES = ((3, (2, 4, 3, 3), "train"), (3, (4, 3), "train"), (3, (2, 3, 4), "eval"), (1, (2, 3, 3, 3), "train"),
               (4, (2, 2, 3, 3), "train"))


def affine(nf: int, seed: int) -> dict:
    gamma, beta = random_affine(nf, seed=seed)
    return {"mults": gamma, "adds": beta}


def one_by_one_input(n: int, nf: int, seed: int) -> torch.Tensor:
    return torch.randn(n, nf, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 5 + 2


def parameters(InstanceNorm) -> None:
    with recording("test_parameters") as rec:
        for nf, eps in PARAMETER_CASES:
            inorm = InstanceNorm(nf, eps=eps)
            rec.put(f"nf{nf}", module_facts(inorm))
            rec.call(f"nf{nf}/double", lambda inorm=inorm: module_facts(inorm.double()))
        rec.put("default", module_facts(InstanceNorm(DEFAULT_NF)))
        own_parameters(rec, lambda: InstanceNorm(3), affine(3, 5))


def output(InstanceNorm) -> None:
    with recording("test_output") as rec:
        rec.put("default", module_facts(InstanceNorm(DEFAULT_NF)))
        shape, eps, seed = FRESH
        fresh = InstanceNorm(shape[1], eps=eps).double()
        rec.put("fresh/facts", module_facts(fresh))
        rec.call("fresh", fresh, seeded_input(*shape, seed=seed), own=OWN)
        for i, (shape, eps, seed) in enumerate(OUTPUT_CASES):
            inorm = InstanceNorm(shape[1], eps=eps).double()
            rec.call(f"case{i}/set", set_params, inorm, affine(shape[1], seed + 10))
            rec.call(f"case{i}", inorm, seeded_input(*shape, seed=seed), own=OWN)
        shape, seed = FLOAT32
        rec.call("float32", InstanceNorm(shape[1]), seeded_input(*shape, seed=seed, dtype=torch.float32), own=OWN)
        for layout, shape, eps, seed in LAYOUTS:
            inorm = InstanceNorm(shape[1], eps=eps).double()
            rec.call(f"{layout}/set", set_params, inorm, affine(shape[1], seed + 10))
            rec.call(layout, inorm, laid_out(seeded_input(*shape, seed=seed), layout), own=OWN)


def independence_probe(InstanceNorm) -> None:
    with recording("test_independence") as rec:
        for i, (shape, eps, seed) in enumerate(INDEPENDENCE):
            x = seeded_input(*shape, seed=seed)
            inorm = InstanceNorm(shape[1], eps=eps).double()
            rec.call(f"case{i}/set", set_params, inorm, affine(shape[1], seed + 20))
            independence(rec, f"case{i}", inorm, x, OWN)
            for c in range(shape[1]):
                changed = x.clone()
                changed[:, c] = changed[:, c] * 4 + 3  # a new offset and scale for channel c only
                rec.call(f"case{i}/channel{c}", inorm, changed, own=OWN)


def train_equals_eval(InstanceNorm) -> None:
    with recording("test_train_equals_eval") as rec:
        for i, (shape, eps, seed) in enumerate(TRAIN_EVAL):
            inorm = InstanceNorm(shape[1], eps=eps).double()
            rec.call(f"case{i}/set", set_params, inorm, affine(shape[1], seed))
            train_and_eval(rec, f"case{i}", inorm, seeded_input(*shape, seed=seed), OWN)


def one_by_one_map(InstanceNorm) -> None:
    with recording("test_one_by_one_map") as rec:
        for i, (n, nf, eps, seed) in enumerate(ONE_BY_ONE):
            inorm = InstanceNorm(nf, eps=eps).double()
            rec.call(f"case{i}/set", set_params, inorm, affine(nf, seed + 30))
            for mode in (True, False):
                rec.call(f"case{i}/{'train' if mode else 'eval'}", inorm.train(mode), one_by_one_input(n, nf, seed),
                         own=OWN)
        x = torch.randn(2, 3, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(7)).requires_grad_(True)

        def gradient():
            InstanceNorm(3).double()(x).sum().backward()
            return x.grad

        rec.call("gradient", gradient, own=OWN)


def gradients_probe(InstanceNorm) -> None:
    with recording("test_gradients") as rec:
        for i, (shape, eps, seed, training) in enumerate(GRADIENT_CASES):
            inorm = InstanceNorm(shape[1], eps=eps).double().train(training)
            rec.call(f"case{i}", gradients, inorm, seeded_input(*shape, seed=seed), affine(shape[1], seed + 40),
                     seeded_normal(*shape, seed=seed + 100), own=OWN)


def clear_errors(InstanceNorm) -> None:
    with recording("test_clear_errors") as rec:
        for i, (nf, shape, mode) in enumerate(ERROR_CASES):
            rec.call(f"case{i}", lambda x, nf=nf, mode=mode: InstanceNorm(nf).train(mode == "train")(x),
                     seeded_input(*shape, seed=i, dtype=torch.float32), own=OWN)

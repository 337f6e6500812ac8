"""Q6's probes: the student's LayerNorm on the hidden tests' inputs, and the lesson's CNN trained with it."""

from __future__ import annotations

import torch

from course_recorder import recording
from course_recorder.inputs import laid_out, seeded_input, seeded_normal
from course_recorder.probes import (gradients, independence, module_facts, own_parameters, set_params, train,
                                    train_and_eval)

OWN = "LayerNorm"
PARAMETER_EPS = (1e-5, 0.5)
FRESH = ((3, 2, 2, 3), 0.5, 0)
# (shape, mult, add, eps, seed)
OUTPUT_CASES = (((3, 2, 2, 3), 1.7, -0.6, 0.5, 0), ((2, 3, 1, 2), -0.8, 0.9, 1e-5, 1), ((4, 2, 3, 4), 2.5, 0.3, 0.5, 2),
                ((5, 4, 3, 3), 0.6, 1.2, 1e-3, 3), ((1, 3, 2, 2), 1.3, -1.1, 0.5, 4))
FLOAT32 = ((2, 3, 4, 4), 9)
# Inputs the contract accepts whatever their memory layout: (kind, shape, mult, add, eps, seed).
LAYOUTS = (("channels_last", (3, 4, 3, 2), 1.2, 0.4, 0.5, 11), ("transposed", (2, 3, 2, 4), -0.7, 0.2, 1e-5, 12))
INDEPENDENCE = (((4, 3, 2, 2), 0.5, 1), ((3, 2, 1, 1), 1e-5, 2), ((5, 4, 3, 2), 1e-5, 3))  # (shape, eps, seed)
TRAIN_EVAL = (((4, 3, 2, 2), 0.5, 5), ((2, 5, 3, 1), 1e-5, 6))
GRADIENT_CASES = (((2, 3, 2, 1), 0.5, 0, True), ((3, 2, 2, 2), 1e-5, 1, False))  # (shape, eps, seed, training)
GRADIENT_PARAMS = (1.3, -0.4)
TRAINING = dict(steps=30, bs=64, lr=0.2, seed=0)


def scalar_affine(mult: float, add: float) -> dict:
    return {"mult": torch.tensor(mult, dtype=torch.float64), "add": torch.tensor(add, dtype=torch.float64)}


def parameters(LayerNorm) -> None:
    with recording("test_parameters") as rec:
        for i, eps in enumerate(PARAMETER_EPS):
            ln = LayerNorm(eps=eps)
            rec.put(f"eps{i}", module_facts(ln))
            rec.call(f"eps{i}/double", lambda ln=ln: module_facts(ln.double()))
        rec.put("default", module_facts(LayerNorm()))
        own_parameters(rec, LayerNorm, scalar_affine(1.7, -0.6))


def output(LayerNorm) -> None:
    with recording("test_output") as rec:
        shape, eps, seed = FRESH
        fresh = LayerNorm(eps=eps).double()
        rec.put("fresh/facts", module_facts(fresh))
        rec.call("fresh", fresh, seeded_input(*shape, seed=seed), own=OWN)
        for i, (shape, mult, add, eps, seed) in enumerate(OUTPUT_CASES):
            ln = LayerNorm(eps=eps).double()
            rec.put(f"case{i}/facts", module_facts(ln))
            rec.call(f"case{i}/set", set_params, ln, scalar_affine(mult, add))
            rec.call(f"case{i}", ln, seeded_input(*shape, seed=seed), own=OWN)
        shape, seed = FLOAT32
        rec.call("float32", LayerNorm(), seeded_input(*shape, seed=seed, dtype=torch.float32), own=OWN)
        for kind, shape, mult, add, eps, seed in LAYOUTS:
            ln = LayerNorm(eps=eps).double()
            rec.put(f"{kind}/facts", module_facts(ln))
            rec.call(f"{kind}/set", set_params, ln, scalar_affine(mult, add))
            rec.call(kind, ln, laid_out(seeded_input(*shape, seed=seed), kind), own=OWN)


def batch_independence(LayerNorm) -> None:
    with recording("test_batch_independence") as rec:
        for i, (shape, eps, seed) in enumerate(INDEPENDENCE):
            ln = LayerNorm(eps=eps).double()
            rec.put(f"case{i}/facts", module_facts(ln))
            rec.call(f"case{i}/set", set_params, ln, scalar_affine(1.4, -0.3))
            independence(rec, f"case{i}", ln, seeded_input(*shape, seed=seed), OWN)


def train_equals_eval(LayerNorm) -> None:
    with recording("test_train_equals_eval") as rec:
        for i, (shape, eps, seed) in enumerate(TRAIN_EVAL):
            ln = LayerNorm(eps=eps).double()
            rec.put(f"case{i}/facts", module_facts(ln))
            rec.call(f"case{i}/set", set_params, ln, scalar_affine(0.7, 0.4))
            train_and_eval(rec, f"case{i}", ln, seeded_input(*shape, seed=seed), OWN)


def gradients_probe(LayerNorm) -> None:
    with recording("test_gradients") as rec:
        for i, (shape, eps, seed, training) in enumerate(GRADIENT_CASES):
            ln = LayerNorm(eps=eps).double().train(training)
            rec.call(f"case{i}", gradients, ln, seeded_input(*shape, seed=seed), scalar_affine(*GRADIENT_PARAMS),
                     seeded_normal(*shape, seed=seed + 100), own=OWN)


def training_curve(lesson_cnn) -> None:
    with recording("test_training_curve") as rec:
        train(rec, "losses", lesson_cnn, own=OWN, **TRAINING)

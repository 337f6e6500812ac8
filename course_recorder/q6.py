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


# ---- Part E: RMSNorm ----
RMS_OWN = "RMSNorm"
RMS_PARAMETERS = ((6, 1e-6), ((3, 4), 0.5))  # (normalized_shape, eps)
# (input shape, normalized_shape, eps, seed); the weight is seeded from the seed too
RMS_FRESH = ((2, 3, 7), 7, 0.5, 20)
RMS_CASES = (((2, 5, 6), 6, 1e-6, 21), ((3, 4, 3, 5), (3, 5), 0.5, 22), ((2, 3, 4), (2, 3, 4), 1e-3, 23),
             ((4, 9), (9,), 0.5, 24), ((2, 2, 3, 4), (4,), 1e-6, 25))
RMS_FLOAT32 = ((3, 4, 8), 8, 26)
RMS_LAYOUTS = (("channels_last", (2, 3, 4, 2), (4, 2), 0.5, 27), ("transposed", (2, 3, 3, 5), (3, 5), 0.5, 28))
# (normalized_shape, bad input shape): the trailing dimensions do not match
RMS_BAD = ((5, (2, 3, 4)), ((4, 5), (2, 5, 4)), ((4, 5), (5,)), ((2, 3), (3, 2, 4)))
RMS_GOOD = (((4, 5), (4, 5)), (3, (3,)), ((2, 3), (1, 1, 2, 3)))


def rms_weight(normalized_shape, seed: int) -> torch.Tensor:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return seeded_normal(*shape, seed=seed + 1000) * 0.5 + 1.0


def rms_parameters(RMSNorm) -> None:
    with recording("test_rms_parameters") as rec:
        for i, (ns, eps) in enumerate(RMS_PARAMETERS):
            layer = RMSNorm(ns, eps=eps)
            rec.put(f"eps{i}", module_facts(layer))
            rec.put(f"eps{i}/shape", getattr(layer, "normalized_shape", None))
            rec.call(f"eps{i}/double", lambda layer=layer: module_facts(layer.double()))
        rec.put("default", module_facts(RMSNorm(4)))
        own_parameters(rec, lambda: RMSNorm((2, 3)), {"weight": rms_weight((2, 3), 0)})


def rms_output(RMSNorm) -> None:
    with recording("test_rms_output") as rec:
        shape, ns, eps, seed = RMS_FRESH
        fresh = RMSNorm(ns, eps=eps).double()
        rec.put("fresh/facts", module_facts(fresh))
        rec.call("fresh", fresh, seeded_input(*shape, seed=seed), own=RMS_OWN)
        for i, (shape, ns, eps, seed) in enumerate(RMS_CASES):
            layer = RMSNorm(ns, eps=eps).double()
            rec.call(f"case{i}/set", set_params, layer, {"weight": rms_weight(ns, seed)})
            rec.call(f"case{i}", layer, seeded_input(*shape, seed=seed), own=RMS_OWN)
        shape, ns, seed = RMS_FLOAT32
        rec.call("float32", RMSNorm(ns), seeded_input(*shape, seed=seed, dtype=torch.float32), own=RMS_OWN)
        for kind, shape, ns, eps, seed in RMS_LAYOUTS:
            layer = RMSNorm(ns, eps=eps).double()
            rec.call(f"{kind}/set", set_params, layer, {"weight": rms_weight(ns, seed)})
            rec.call(kind, layer, laid_out(seeded_input(*shape, seed=seed), kind), own=RMS_OWN)


def rms_errors(RMSNorm) -> None:
    with recording("test_rms_errors") as rec:
        for i, (ns, shape) in enumerate(RMS_BAD):
            rec.call(f"bad{i}", lambda x, ns=ns: RMSNorm(ns).double()(x) and None, seeded_input(*shape, seed=i),
                     own=RMS_OWN)
        for i, (ns, shape) in enumerate(RMS_GOOD):
            rec.call(f"good{i}", lambda x, ns=ns: tuple(RMSNorm(ns).double()(x).shape), seeded_input(*shape, seed=i),
                     own=RMS_OWN)

"""Q3's probes: the student's BatchNorm on the hidden tests' inputs, and the lesson's CNN trained with it."""

from __future__ import annotations

import copy

import torch

from course_recorder import recording
from course_recorder.inputs import laid_out, random_affine, seeded_input, seeded_normal
from course_recorder.probes import gradients, module_facts, set_buffers, set_params, shared_tensors, train

Tensor = torch.Tensor
OWN = "BatchNorm"

PARAMETER_NFS = (1, 3, 7)
FRESH_X = ((4, 3, 2, 2), 0)
TRAIN_CASES = (((2, 3, 2, 1), 0.3, 0.5, 0), ((5, 4, 3, 3), 0.1, 1e-5, 1), ((3, 2, 1, 2), 0.1, 0.5, 2),
               ((2, 5, 4, 3), 0.2, 1e-3, 3), ((1, 3, 2, 2), 0.1, 0.5, 4))  # (shape, mom, eps, seed); N may be 1
# The same values in other memory layouts: the contract takes any (N, nf, H, W) tensor. (shape, eps, seed, layout)
LAYOUT_CASES = (((3, 4, 3, 2), 0.5, 5, "channels_last"), ((2, 3, 4, 3), 0.5, 6, "transposed"))
EVAL_CASES = (((2, 3, 2, 1), 0.5, 0), ((5, 4, 3, 3), 1e-5, 1), ((1, 3, 1, 1), 0.5, 2))  # (shape, eps, seed)
RUNNING_CASES = (((2, 3, 2, 1), 0.3, 1, 0), ((3, 4, 1, 2), 0.1, 1, 1), ((2, 3, 2, 1), 0.3, 20, 2),
                 ((4, 2, 2, 2), 0.1, 20, 3))  # (shape, mom, steps, seed)
SEQUENCE = (0.2, (2, 5, 3, 2, 4))  # mom, batch sizes of (n, 3, 2, 1) inputs with seeds 100 + step
EVAL_AFTER = ((3, 4, 2, 2), 7), ((1, 4, 1, 1), 8), ((6, 4, 3, 1), 9)
GRADIENT_CASES = (((2, 3, 2, 1), 0.5, 0), ((3, 2, 2, 2), 1e-5, 1))  # (shape, eps, seed)
HISTORY_STEPS = 20
ERROR_CASES = (("train", 3, (1, 3, 1, 1)), ("train", 3, (4, 3)), ("eval", 3, (2, 3, 4)), ("train", 3, (2, 4, 3, 3)),
               ("train", 1, (2, 3, 3, 3)))
TRAINING = dict(steps=30, bs=64, lr=1.0, seed=0)


def eval_statistics(shape: tuple, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """gamma, beta, running means and running variances for an eval case."""
    gamma, beta = random_affine(shape[1], seed=seed + 20)
    g = torch.Generator().manual_seed(seed + 30)
    means = torch.randn(shape[1], generator=g, dtype=torch.float64) * 2
    variances = torch.rand(shape[1], generator=g, dtype=torch.float64) * 3 + 0.2
    return gamma, beta, means, variances


def _affine(gamma: Tensor, beta: Tensor) -> dict[str, Tensor]:
    return {"mults": gamma, "adds": beta}


def parameters_and_buffers(BatchNorm) -> None:
    with recording("test_parameters_and_buffers") as rec:
        for nf in PARAMETER_NFS:
            bn = rec.call(f"nf{nf}", BatchNorm, nf)
            rec.put(f"nf{nf}/facts", module_facts(bn))
            if isinstance(bn, torch.nn.Module):
                rec.call(f"nf{nf}/double", lambda: module_facts(bn.double()))
        # Two layers of one size, as in a model: each must hold tensors of its own.
        first, second = rec.call("first", BatchNorm, 3), rec.call("second", BatchNorm, 3)
        if isinstance(first, torch.nn.Module) and isinstance(second, torch.nn.Module):
            rec.put("shared", shared_tensors(first, second, ("mults", "adds", "means", "vars")))
            first.train()
            rec.call("first/step", first, seeded_input(4, 3, 2, 2, seed=12, dtype=torch.float32))
            rec.put("second/after", _buffers(second))


def train_mode_output(BatchNorm) -> None:
    with recording("test_train_mode_output") as rec:
        shape, seed = FRESH_X
        rec.call("fresh", lambda x: BatchNorm(3).double().train()(x), seeded_input(*shape, seed=seed), own=OWN)
        for i, (shape, mom, eps, seed) in enumerate(TRAIN_CASES):
            bn = BatchNorm(shape[1], mom=mom, eps=eps).double().train()
            rec.call(f"case{i}/set", set_params, bn, _affine(*random_affine(shape[1], seed=seed + 10)))
            rec.call(f"case{i}", bn, seeded_input(*shape, seed=seed), own=OWN)
        for i, (shape, eps, seed, layout) in enumerate(LAYOUT_CASES):
            bn = BatchNorm(shape[1], eps=eps).double().train()
            rec.call(f"{layout}/set", set_params, bn, _affine(*random_affine(shape[1], seed=seed + 10)))
            rec.call(layout, bn, laid_out(seeded_input(*shape, seed=seed), layout), own=OWN)


def eval_mode_output(BatchNorm) -> None:
    with recording("test_eval_mode_output") as rec:
        shape, seed = FRESH_X
        rec.call("fresh", lambda x: BatchNorm(3).double().eval()(x), seeded_input(*shape, seed=seed), own=OWN)
        for i, (shape, eps, seed) in enumerate(EVAL_CASES):
            gamma, beta, means, variances = eval_statistics(shape, seed)
            x = seeded_input(*shape, seed=seed)
            bn = BatchNorm(shape[1], eps=eps).double().eval()
            rec.call(f"case{i}/set", set_params, bn, _affine(gamma, beta))
            rec.call(f"case{i}/untrained", bn, x, own=OWN)
            rec.call(f"case{i}/set_running", set_buffers, bn, {"means": means, "vars": variances})
            rec.call(f"case{i}", bn, x, own=OWN)


def _buffers(bn) -> dict:
    return {"means": getattr(bn, "means", None), "vars": getattr(bn, "vars", None)}


def running_statistics(BatchNorm) -> None:
    with recording("test_running_statistics") as rec:
        shape, seed = FRESH_X
        bn = BatchNorm(3).double().train()  # the default mom is 0.1
        rec.call("default/step", bn, seeded_input(*shape, seed=seed), own=OWN)
        rec.put("default", _buffers(bn))
        for i, (shape, mom, steps, seed) in enumerate(RUNNING_CASES):
            x = seeded_input(*shape, seed=seed)
            bn = BatchNorm(shape[1], mom=mom, eps=0.5).double().train()
            for step in range(steps):
                rec.call(f"case{i}/step{step}", bn, x, own=OWN)
            rec.put(f"case{i}", _buffers(bn))
        mom, sizes = SEQUENCE
        bn = BatchNorm(3, mom=mom, eps=0.5).double().train()
        for step, n in enumerate(sizes):
            rec.call(f"sequence/step{step}", bn, seeded_input(n, 3, 2, 1, seed=100 + step), own=OWN)
        rec.put("sequence", _buffers(bn))


def eval_leaves_buffers_alone(BatchNorm) -> None:
    with recording("test_eval_leaves_buffers_alone") as rec:
        bn = BatchNorm(3).double().train()
        rec.call("first/train", bn, seeded_input(4, 3, 2, 2), own=OWN)
        rec.put("first/trained", _buffers(bn))
        bn.eval()
        rec.call("first/eval", bn, seeded_input(4, 3, 2, 2, seed=5), own=OWN)
        rec.put("first/after", _buffers(bn))
        bn = BatchNorm(4, mom=0.3, eps=0.5).double().train()
        for seed in range(3):
            rec.call(f"train{seed}", bn, seeded_input(3, 4, 2, 2, seed=seed), own=OWN)
        rec.put("trained", _buffers(bn))
        bn.eval()
        for i, (shape, seed) in enumerate(EVAL_AFTER):
            x = seeded_input(*shape, seed=seed).requires_grad_(True)

            def forward_backward(x=x):
                with torch.enable_grad():
                    out = bn(x)
                    out.sum().backward()
                return out

            rec.call(f"eval{i}", forward_backward, own=OWN)
            rec.put(f"eval{i}/after", _buffers(bn))
        # Training mode under torch.no_grad() is still training mode: the same as with gradients on.
        bn.train()
        twin = copy.deepcopy(bn)
        x = seeded_input(3, 4, 2, 2, seed=11)
        with torch.enable_grad():
            rec.call("with_grad", twin, x, own=OWN)
        rec.put("with_grad/after", _buffers(twin))
        with torch.no_grad():
            rec.call("no_grad", bn, x, own=OWN)
        rec.put("no_grad/after", _buffers(bn))


def gradients_probe(BatchNorm) -> None:
    with recording("test_gradients") as rec:
        for i, (shape, eps, seed) in enumerate(GRADIENT_CASES):
            gamma, beta = random_affine(shape[1], seed=seed + 40)
            bn = BatchNorm(shape[1], mom=0.3, eps=eps).double().train()
            rec.call(f"case{i}", gradients, bn, seeded_input(*shape, seed=seed), _affine(gamma, beta),
                     seeded_normal(*shape, seed=seed + 100), own=OWN)


def buffers_without_history(BatchNorm) -> None:
    with recording("test_buffers_without_history") as rec:
        bn = BatchNorm(3).double().train()

        def step_backward(layer, x):
            out = layer(x)
            out.sum().backward()
            return out

        rec.call("one", step_backward, bn, seeded_input(4, 3, 2, 2).requires_grad_(True), own=OWN)
        rec.put("one/buffers", _buffers(bn))
        bn = BatchNorm(3, mom=0.3, eps=0.5).double().train()
        weights = seeded_normal(2, 3, 2, 2, seed=0)
        for step in range(HISTORY_STEPS):
            x = seeded_input(2, 3, 2, 2, seed=step).requires_grad_(True)
            rec.call(f"step{step}", lambda x=x: (bn(x) * weights).sum().backward(), own=OWN)
        rec.put("trained", _buffers(bn))
        rec.put("trained/facts", module_facts(bn))
        loaded = BatchNorm(3, mom=0.3, eps=0.5).double()

        def load() -> None:
            loaded.load_state_dict(bn.state_dict())

        rec.call("load", load)
        bn.eval()
        loaded.eval()
        x = seeded_input(2, 3, 2, 2, seed=50)
        rec.call("eval", bn, x, own=OWN)
        rec.call("loaded", loaded, x, own=OWN)
        bn32 = BatchNorm(3, mom=0.3).train()
        rec.call("float32", bn32, seeded_input(2, 3, 2, 2, dtype=torch.float32), own=OWN)
        bn32.double()
        rec.put("float32/double", _buffers(bn32))
        rec.call("float32/eval", bn32.eval(), x, own=OWN)


def clear_errors(BatchNorm) -> None:
    with recording("test_clear_errors") as rec:
        for i, (mode, nf, shape) in enumerate(ERROR_CASES):
            rec.call(f"case{i}", lambda x, nf=nf, mode=mode: BatchNorm(nf).train(mode == "train")(x),
                     seeded_input(*shape, seed=i, dtype=torch.float32), own=OWN)
        rec.call("eval_1x1", lambda x: BatchNorm(3).double().eval()(x), torch.ones(1, 3, 1, 1, dtype=torch.float64),
                 own=OWN)


def training_curve(lesson_cnn) -> None:
    with recording("test_training_curve") as rec:
        train(rec, "losses", lesson_cnn, float64=True, own=OWN, **TRAINING)


__all__ = ["parameters_and_buffers", "train_mode_output", "eval_mode_output", "running_statistics",
           "eval_leaves_buffers_alone", "gradients_probe", "buffers_without_history", "clear_errors",
           "training_curve"]

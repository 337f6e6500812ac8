"""Q9's probes: the student's RunningBatchNorm over sequences of batches, in eval, at batch size one, its
gradients, and the lesson's CNN trained with it at batch size 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_recorder import recording
from course_recorder.guard import refusing
from course_recorder.inputs import grading_valid, laid_out, random_affine, seeded_input
from course_recorder.probes import (gradients, module_facts, one_thread, set_params, shared_tensors, train,
                                    training_run)

OWN = "RunningBatchNorm"
BUFFERS = ("sums", "sqrs", "count", "batch")
STATE_NF = 5
ROUND_TRIP = dict(sizes=[3, 4, 32], nf=5, hw=(2, 3), mom=0.1, eps=1e-5, seed=40)
SEQUENCES = (
    dict(sizes=[2, 3, 2, 3, 10, 32, 2, 64, 3] + [2] * 12, mom=0.1, eps=1e-5, seed=0),  # 20 seen at step 5
    dict(sizes=[3, 2, 2, 64, 2, 32], nf=4, hw=(3, 2), mom=0.3, eps=0.5, seed=40),
    # Channel 0 constant and eps tiny: sqrs/count - mean**2 dips below 0 by rounding once the clamp is over.
    dict(sizes=[2, 3, 32, 2, 5], nf=3, hw=(2, 2), mom=0.1, eps=1e-15, seed=70, constant=2.9),
    # The same math on transposed inputs (course_recorder.inputs.laid_out): any tensor of the right shape.
    dict(sizes=[2, 4, 3], nf=3, hw=(3, 2), mom=0.2, eps=1e-5, seed=75, layout="transposed"),
)
SHARED = dict(nf=3, hw=(2, 2), first=2, between=[32, 8], seed=95)  # fresh layers' first steps, another layer between
EVAL_SIZES = ([2, 2], [2, 3, 32, 2])  # 4 examples seen (clamp active), then 39 (clamp over)
EVAL = dict(nf=3, mom=0.3, eps=0.5, hw=(3, 2))
BATCH_OF_ONE = (((1, 1), [1] * 25), ((2, 2), [1, 2, 1, 1, 3] + [1] * 16))  # (hw, sizes), mom 0.2, seed 30
HISTORY_STEPS = 20
GRADIENT = dict(nf=3, mom=0.3, eps=0.5, before=[3, 2], size=4)
TRAINING = dict(steps=30, bs=2, lr=0.1, seed=0)
COLLAPSE = dict(steps=300, bs=2, lr=0.2, seed=0, valid=512)


def defaults(config: dict) -> dict:
    return {"nf": 3, "hw": (2, 2), "mom": 0.1, "eps": 1e-5, "seed": 0, "constant": None, "layout": None, **config}


def batch_input(bs: int, nf: int, hw: tuple[int, int], seed: int, constant: float | None = None) -> torch.Tensor:
    """A float64 batch with its own offset and scale per example and channel; channel 0 has a tiny variance
    (about 1e-3), so the 0.01 clamp matters there while it is active (or is `constant` everywhere)."""
    x = seeded_input(bs, nf, *hw, seed=seed).clone()
    x[:, 0] = constant if constant is not None else x[:, 0] * 0.01
    return x


def affine(nf: int, seed: int = 1) -> dict:
    gamma, beta = random_affine(nf, seed)
    return {"mults": gamma.view(nf, 1, 1), "adds": beta.view(nf, 1, 1)}


def make_layer(rec, key: str, cls, nf: int, mom: float, eps: float, seed: int = 1):
    """The student's layer in float64 with the tests' mults and adds (set_params failures are recorded)."""
    layer = cls(nf, mom=mom, eps=eps).double()
    rec.call(f"{key}/set", set_params, layer, affine(nf, seed))
    return layer


def state_of(layer) -> dict:
    return {name: dict(layer.named_buffers(recurse=False)).get(name) for name in BUFFERS}


def class_numbers(cls: type) -> dict:
    """The numbers and tensors the student's class itself holds (class attributes, not an instance's): a layer's
    state kept there is shared by every layer."""
    found = {}
    for klass in cls.__mro__:
        if klass.__module__.startswith("torch"):
            break
        for name, value in vars(klass).items():
            if isinstance(value, (int, float, torch.Tensor)) and not isinstance(value, bool) and name not in found:
                found[name] = value.detach().clone() if isinstance(value, torch.Tensor) else value
    return found


def shared_state(rec, key: str, cls) -> None:
    """Evidence of state shared between layers: two fresh layers' first training steps on the same batch, one before
    and one after another layer trained (`key/before`, `key/after`); the class's own numbers before and after that
    training; which of the two fresh layers' buffers and parameters share memory."""
    nf, hw, seed = SHARED["nf"], SHARED["hw"], SHARED["seed"]
    first = cls(nf).double()
    fresh = cls(nf).double()
    rec.put(f"{key}/class_before", class_numbers(cls))
    x = batch_input(SHARED["first"], nf, hw, seed)
    rec.call(f"{key}/before", first.train(), x, own=OWN)
    other = cls(nf).double().train()
    for i, bs in enumerate(SHARED["between"]):
        rec.call(f"{key}/between{i}", other, batch_input(bs, nf, hw, seed + 1 + i), own=OWN)
    rec.call(f"{key}/after", fresh.train(), x, own=OWN)
    rec.put(f"{key}/class_after", class_numbers(cls))
    rec.put(f"{key}/same_memory", shared_tensors(cls(nf), cls(nf)))


def _sequence(rec, key: str, cls, config: dict):
    cfg = defaults(config)
    layer = make_layer(rec, key, cls, cfg["nf"], cfg["mom"], cfg["eps"])
    layer.train()
    for i, bs in enumerate(cfg["sizes"]):
        x = batch_input(bs, cfg["nf"], cfg["hw"], cfg["seed"] + i, cfg["constant"])
        rec.call(f"{key}/step{i}", layer, laid_out(x, cfg["layout"]) if cfg["layout"] else x, own=OWN)
        rec.put(f"{key}/step{i}/state", state_of(layer))
    return layer


def state(RunningBatchNorm) -> None:
    with recording("test_rbn_state") as rec:
        rec.put("facts", module_facts(RunningBatchNorm(STATE_NF)))
        rec.call("double", lambda: module_facts(RunningBatchNorm(STATE_NF).double()))
        trained = _sequence(rec, "trained", RunningBatchNorm, ROUND_TRIP)
        copy_layer = make_layer(rec, "copy", RunningBatchNorm, STATE_NF, 0.1, 1e-5, seed=7)
        rec.call("load", lambda: copy_layer.load_state_dict(trained.state_dict()) and None)
        x = batch_input(6, STATE_NF, (2, 3), seed=41)
        rec.call("eval", trained.eval(), x, own=OWN)
        rec.call("loaded", copy_layer.eval(), x, own=OWN)
        single = RunningBatchNorm(STATE_NF)  # float32 in, float32 out ("any float dtype")
        rec.put("float32/facts", module_facts(single))
        rec.call("float32", single, batch_input(4, STATE_NF, (2, 2), seed=42).float(), own=OWN)
        shared_state(rec, "shared", RunningBatchNorm)


def training_math(RunningBatchNorm) -> None:
    with recording("test_rbn_training_math") as rec:
        rec.put("class_before", class_numbers(RunningBatchNorm))
        for i, config in enumerate(SEQUENCES):
            _sequence(rec, f"seq{i}", RunningBatchNorm, config)
        rec.put("class_after", class_numbers(RunningBatchNorm))


def eval_probe(RunningBatchNorm) -> None:
    with recording("test_rbn_eval") as rec:
        nf, mom, eps, hw = EVAL["nf"], EVAL["mom"], EVAL["eps"], EVAL["hw"]
        x = batch_input(4, nf, hw, seed=50)
        rec.put("class_before", class_numbers(RunningBatchNorm))
        layer = make_layer(rec, "untrained", RunningBatchNorm, nf, mom, eps)
        rec.call("untrained", layer.eval(), x, own=OWN)
        rec.put("untrained/after", state_of(layer))
        for k, sizes in enumerate(EVAL_SIZES):
            layer = _sequence(rec, f"seq{k}", RunningBatchNorm, dict(sizes=sizes, nf=nf, hw=hw, mom=mom, eps=eps, seed=10))
            layer.eval()
            with torch.enable_grad():
                rec.call(f"seq{k}/eval", layer, x, own=OWN)
            rec.put(f"seq{k}/after", state_of(layer))
            rec.call(f"seq{k}/alone", layer, x[1:2].clone(), own=OWN)
        layer = make_layer(rec, "no_grad", RunningBatchNorm, nf, mom, eps)
        layer.train()
        with torch.no_grad():
            rec.call("no_grad", layer, x, own=OWN)
        rec.put("no_grad/state", state_of(layer))
        rec.put("class_after", class_numbers(RunningBatchNorm))


def batch_of_one(RunningBatchNorm) -> None:
    with recording("test_rbn_batch_of_one") as rec:
        rec.put("class_before", class_numbers(RunningBatchNorm))
        for i, (hw, sizes) in enumerate(BATCH_OF_ONE):
            _sequence(rec, f"seq{i}", RunningBatchNorm, dict(sizes=sizes, nf=3, hw=hw, mom=0.2, eps=1e-5, seed=30))
        rec.put("class_after", class_numbers(RunningBatchNorm))


def gradients_probe(RunningBatchNorm) -> None:
    with recording("test_rbn_gradients") as rec:
        nf, mom, eps = GRADIENT["nf"], GRADIENT["mom"], GRADIENT["eps"]
        layer = make_layer(rec, "history", RunningBatchNorm, nf, mom, eps)
        layer.train()
        for i in range(HISTORY_STEPS):
            x = batch_input(2 + i % 3, nf, (2, 2), seed=60 + i).requires_grad_()

            def step(x=x):
                out = layer(x)
                (out * out).sum().backward()

            rec.call(f"history/step{i}", step, own=OWN)
            rec.put(f"history/step{i}/state", state_of(layer))
        layer = make_layer(rec, "grad", RunningBatchNorm, nf, mom, eps)
        layer.train()
        for i, bs in enumerate(GRADIENT["before"]):
            rec.call(f"grad/step{i}", layer, batch_input(bs, nf, (2, 2), seed=80 + i), own=OWN)
        rec.put("grad/state", state_of(layer))
        x = batch_input(GRADIENT["size"], nf, (2, 2), seed=90)
        rec.call("grad", gradients, layer, x, affine(nf), seeded_input(*x.shape, seed=91), own=OWN)


def trains_at_bs2(make_model) -> None:
    with recording("test_rbn_trains_at_bs2") as rec:
        train(rec, "losses", make_model, own=OWN, **TRAINING)


def valid_loss(make_model, steps: int, bs: int, lr: float, seed: int, valid: int) -> float:
    """Validation loss (the first `valid` grading images, eval mode) after `steps` SGD steps at batch size bs."""
    with one_thread():
        model, _ = training_run(make_model, steps=steps, bs=bs, lr=lr, seed=seed)
        model.eval()
        x, y = grading_valid(valid)
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()


def bs2_collapses(make_model) -> None:
    with recording("test_bs2_batchnorm_collapses") as rec:
        rec.call("valid_loss", lambda: valid_loss(make_model, **COLLAPSE), own=OWN)


# ---- Part D: recalibrate_bn ------------------------------------------------------------------------------------

RECAL_BATCHES = ([5, 3, 8, 2], [4, 6, 3])  # batch sizes for model 0 (a list) and model 1 (a generator)
RECAL_SEED = 200
OLD_BATCHES_TRACKED = 7  # every BatchNorm's num_batches_tracked before the call (its statistics are stale ones)


class Spy(nn.Module):
    """Passes its input on; notes, at every forward pass, whether autograd was on and whether it was in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append([torch.is_grad_enabled(), self.training])
        return x


def recal_model(kind: int) -> nn.Module:
    """The models the test recalibrates (float64, seeded weights and stale running statistics), in their modes:
    0: BatchNorm2d (momentum 0.3), a block in eval holding Conv2d + BatchNorm2d (default momentum), BatchNorm1d
       (momentum 0.05), the rest in training mode; 1: Conv3d + BatchNorm3d (momentum None), all in eval;
    2: no BatchNorm (Linear, ReLU, Linear) in eval."""
    gen = torch.Generator().manual_seed(RECAL_SEED + kind)
    if kind == 0:
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(),
                              nn.Sequential(nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5)), nn.Flatten(),
                              nn.Linear(20, 6), nn.BatchNorm1d(6, momentum=0.05), Spy())
    elif kind == 1:
        model = nn.Sequential(nn.Conv3d(2, 3, 2), nn.BatchNorm3d(3, momentum=None), Spy())
    else:
        model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), Spy())
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.num_features, generator=gen, dtype=torch.float64))
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=torch.float64))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen, dtype=torch.float64))
                m.num_batches_tracked.fill_(OLD_BATCHES_TRACKED)
    if kind == 0:
        model.train()
        model[3].eval()
    else:
        model.eval()
    return model


def recal_batches(kind: int) -> list[torch.Tensor]:
    """The batches each model is recalibrated with (model 2, without BatchNorm, gets two batches)."""
    sizes = RECAL_BATCHES[kind] if kind < 2 else [3, 2]
    shape = {0: (3, 4, 4), 1: (2, 3, 3, 3), 2: (4,)}[kind]
    out = []
    for i, bs in enumerate(sizes):
        gen = torch.Generator().manual_seed(RECAL_SEED + 10 * kind + i + 1)
        scale = 1 + torch.arange(shape[0], dtype=torch.float64).view(1, -1, *([1] * (len(shape) - 1)))
        out.append(torch.randn(bs, *shape, generator=gen, dtype=torch.float64) * scale + 0.5 * scale)
    return out


def recal_after(model: nn.Module) -> dict:
    """What recalibrate_bn left behind: each BatchNorm's statistics and momentum, each module's mode, the parameters
    and their .grad, and what the Spy saw during the forward passes."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    spy = [m for m in model.modules() if isinstance(m, Spy)]
    return {
        "norms": [{"running_mean": m.running_mean.detach().clone(), "running_var": m.running_var.detach().clone(),
                   "num_batches_tracked": int(m.num_batches_tracked), "momentum": m.momentum} for m in norms],
        "modes": [[name, bool(m.training)] for name, m in model.named_modules()],
        "params": [p.detach().clone() for p in model.parameters()],
        "grads": [p.grad is not None for p in model.parameters()],
        "seen": spy[0].seen if spy else [],
    }


def recalibrate(recalibrate_bn) -> None:
    from torch.optim.swa_utils import update_bn

    recalibrate_bn = refusing(recalibrate_bn, (update_bn,), "torch's update_bn (torch.optim.swa_utils)")
    with recording("test_recalibrate_bn") as rec:
        for kind in (0, 1, 2):
            model = recal_model(kind)
            batches = recal_batches(kind)
            given = iter(batches) if kind == 1 else batches  # "an iterable": a generator is one too
            # recorded: True if it returned the model itself (or what it raised)
            rec.call(f"model{kind}", lambda model=model, given=given: recalibrate_bn(model, given) is model)
            rec.put(f"model{kind}/after", recal_after(model))
        model = recal_model(0)
        rec.call("empty", lambda: recalibrate_bn(model, []) is model)
        rec.put("empty/after", recal_after(model))


__all__ = ["state", "training_math", "eval_probe", "batch_of_one", "gradients_probe", "trains_at_bs2",
           "bs2_collapses", "recalibrate"]

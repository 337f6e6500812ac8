"""Steps many probes share: what a module holds, setting its parameters, gradients, a short training run.

Each records raw facts and values only; the judge decides what they should have been.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from course_recorder import Recorder
from course_recorder.inputs import build_seeded, grading_batches, weight_shapes

Tensor = torch.Tensor


def module_facts(layer: object) -> dict:
    """What a layer holds: its parameters and buffers (values, with their kinds), state_dict keys, attributes."""
    if not isinstance(layer, nn.Module):
        return {"module": False, "type": type(layer).__name__}
    buffers = dict(layer.named_buffers())
    return {
        "module": True,
        "type": type(layer).__name__,
        "parameters": dict(layer.named_parameters()),
        "buffers": buffers,
        "state_dict": sorted(layer.state_dict()),
        # A buffer replaced by a plain attribute of the same name is no longer the registered one.
        "registered": {name: buffers.get(name) is getattr(layer, name, None) for name in buffers},
        "attributes": {name: getattr(layer, name) for name in ("eps", "mom", "nf", "num_groups", "num_channels",
                                                                "affine", "weight", "bias", "mults", "adds", "mult",
                                                                "add", "means", "vars", "sums", "sqrs", "count",
                                                                "batch") if hasattr(layer, name)},
        "training": layer.training,
    }


def shared_tensors(a: object, b: object, names: tuple[str, ...] = ()) -> list[str]:
    """The names of `a`'s tensors whose memory `b` holds too, under any name: their parameters and buffers, and the
    attributes `names` (a layer's own tensors, registered or not)."""
    def tensors(layer: object) -> dict[str, Tensor]:
        found = {**dict(layer.named_parameters()), **dict(layer.named_buffers())} if isinstance(layer, nn.Module) else {}
        found.update({n: getattr(layer, n) for n in names if isinstance(getattr(layer, n, None), Tensor)})
        return found

    theirs = {t.untyped_storage().data_ptr() for t in tensors(b).values() if t.numel()}
    return sorted(name for name, t in tensors(a).items() if t.numel() and t.untyped_storage().data_ptr() in theirs)


def own_parameters(rec: Recorder, make: Callable[[], nn.Module], values: dict[str, Tensor]) -> None:
    """Two layers built one after the other, the first then given `values` (`first/set`): what the second holds
    (`second`, its module_facts). The judge checks it kept its own start values (norms.expect_own_parameters)."""
    first, second = make(), make()
    rec.call("first/set", set_params, first, values)
    rec.put("second", module_facts(second))


def set_params(layer: nn.Module, values: dict[str, Tensor]) -> None:
    """Copy values into the layer's parameters of those names (reshaped to each parameter's own shape).

    Raises when a name is not an nn.Parameter with as many values: the judge reads the recorded facts.
    """
    for name, value in values.items():
        param = getattr(layer, name, None)
        if not isinstance(param, nn.Parameter) or param.numel() != value.numel():
            raise ValueError(f"{name} is not an nn.Parameter with {value.numel()} values")
        with torch.no_grad():
            param.copy_(value.reshape(param.shape))


def set_buffers(layer: nn.Module, values: dict[str, Tensor]) -> None:
    """Copy values into the layer's registered buffers of those names."""
    buffers = dict(layer.named_buffers())
    for name, value in values.items():
        if name not in buffers or buffers[name].numel() != value.numel():
            raise ValueError(f"{name} is not a registered buffer with {value.numel()} values")
        with torch.no_grad():
            buffers[name].copy_(value.reshape(buffers[name].shape))


def gradients(layer: nn.Module, x: Tensor, params: dict[str, Tensor], weights: Tensor, *, directions: int = 2,
              step: float = 1e-6, seed: int = 0) -> dict:
    """The output and the gradients of sum(output * weights) with respect to x and each named parameter, and
    finite differences of that sum along seeded directions (`name/k`: central differences, the directions drawn
    from `seed` in the order x, then params; the judge draws the same ones).

    The parameters are passed with torch.func.functional_call (each its own leaf, shaped like the layer's).
    Every forward pass runs on a fresh copy of the layer, so state a training step changes (running statistics)
    is the same for each.
    """
    template = copy.deepcopy(layer)
    shapes = {name: getattr(layer, name).shape for name in params}
    base = {"x": x.detach().clone(), **{name: v.detach().clone().reshape(shapes[name]) for name, v in params.items()}}

    def loss(values: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        out = torch.func.functional_call(copy.deepcopy(template), {n: values[n] for n in params}, (values["x"],))
        return out, (out * weights).sum()

    leaves = {name: value.clone().requires_grad_(True) for name, value in base.items()}
    out, total = loss(leaves)
    grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    found = {"output": out.detach(), **dict(zip(leaves, grads))}
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in base:
            for k in range(directions):
                d = torch.randn(base[name].shape, generator=g, dtype=base[name].dtype)
                plus = loss({**base, name: base[name] + step * d})[1]
                minus = loss({**base, name: base[name] - step * d})[1]
                found[f"{name}/{k}"] = ((plus - minus) / (2 * step)).item()
    return found


def train_losses(model: nn.Module, batches: list[tuple[Tensor, Tensor]], lr: float,
                 lrs: list[float] | None = None) -> list[float]:
    """Plain SGD over the batches (at lrs[k] for step k when given); the training loss of each step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step, (xb, yb) in enumerate(batches):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[step]
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


class Float64(nn.Module):
    """A model run in float64 (its input cast on the way in)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.double()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.double())


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread meanwhile: the same numbers on every machine and in every run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def training_run(make_model: Callable[[], nn.Module], *, steps: int, bs: int, lr: float, seed: int = 0,
                 float64: bool = False, init: bool = True, lrs: list[float] | None = None,
                 built: Callable[[nn.Module], None] | None = None) -> tuple[nn.Module, list[float]]:
    """The tests' training run, the same in the kernel (the student's model) and in the judge (its reference,
    course_judge.reference): make_model() from the lesson's initial weights (inputs.build_seeded), trained by
    train_losses on the standard batches, CPU, one thread. `built` sees the model before it trains (its weight
    shapes are recorded even when training fails). The trained model and the loss of each step."""
    with one_thread():
        model = build_seeded(make_model, seed, init)
        if built is not None:
            built(model)
        if float64:
            model = Float64(model)
        batches = grading_batches(steps, bs, seed)
        torch.manual_seed(seed)
        return model, train_losses(model, batches, lr, lrs)


def train(rec: Recorder, key: str, make_model, *, own: str | None = None, **run: object) -> None:
    """Train the student's model (training_run with `run`'s settings); record the losses under `key` and the
    model's conv/linear weight shapes under `key/shapes`."""

    def shapes(model: nn.Module) -> None:
        rec.put(f"{key}/shapes", weight_shapes(model))

    rec.call(key, lambda: training_run(make_model, built=shapes, **run)[1], own=own)


def independence(rec: Recorder, key: str, layer: nn.Module, x: Tensor, own: str) -> None:
    """A layer's output for the whole batch (`key/whole`), for each example alone (`key/alone{i}`) and for the batch
    with every other example changed (`key/changed`)."""
    rec.call(f"{key}/whole", layer, x, own=own)
    for i in range(x.shape[0]):
        rec.call(f"{key}/alone{i}", layer, x[i:i + 1].clone(), own=own)
    changed = x.clone()
    changed[1:] = changed[1:] * 3 - 5
    rec.call(f"{key}/changed", layer, changed, own=own)


def train_and_eval(rec: Recorder, key: str, layer: nn.Module, x: Tensor, own: str) -> None:
    """After a few training-mode forwards, the output in training mode, in eval mode, and in eval mode under
    torch.no_grad(); then the layer's buffers (a per-example normalization keeps none)."""
    layer.train()
    for seed in range(3):  # a layer that (wrongly) keeps running statistics would update them here
        rec.call(f"{key}/warmup{seed}", layer, x * (seed + 1) + seed, own=own)
    rec.call(f"{key}/train", layer, x, own=own)
    layer.eval()
    rec.call(f"{key}/eval", layer, x, own=own)
    with torch.no_grad():
        rec.call(f"{key}/eval_no_grad", layer, x, own=own)
    layer.train()
    rec.put(f"{key}/buffers", sorted(name for name, _ in layer.named_buffers()))

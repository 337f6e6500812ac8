"""The judge's own answers: reference implementations of every contract, and the reference training runs.

Nothing here is ever imported by a grading kernel. Training references are deterministic (CPU, one thread,
seeded: course_recorder.probes.training_run, the loop that trains the student's model too) and cached: in
memory, and on disk under COURSE_JUDGE_CACHE when the grader sets it (a private folder), keyed by the code
that computes them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from course_judge.compare import expect_curve_like
from course_judge.records import Fail, Records
from course_recorder.inputs import cnn_of, weight_shapes
from course_recorder.probes import training_run
from course_recorder.wire import digest

Tensor = torch.Tensor


def same_inputs(r: Records, key: str, *inputs: Tensor) -> None:
    """The tensors the kernel passed to the call `key` are the test's own (and the call left them unchanged)."""
    recorded = r.get(f"{key}#in")
    expected = [digest(t) for t in inputs]
    if not isinstance(recorded, list) or recorded[:len(expected)] != expected:
        raise Fail("the test's input tensor was changed during the call: your code modifies its argument in place "
                   "(x -= ..., x.sub_(...), x[...] = ...); compute on new tensors and leave the input as it is")


# ---------------------------------------------------------------------------------------------- caching
@functools.lru_cache(maxsize=1)
def _code_key() -> str:
    """A hash of the judge's and the probes' code and torch's version: cached results of other code are stale."""
    import course_judge
    import course_recorder

    h = hashlib.sha256(torch.__version__.encode())
    for package in (course_judge, course_recorder):
        for path in sorted(Path(package.__file__).parent.glob("*.py")):
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


_MEMORY: dict[str, object] = {}


def cached(name: str, compute: Callable[[], object], **key: object) -> object:
    """compute(), a JSON-able result, remembered under (name, key) for this code."""
    ident = f"{name}-" + hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    if ident in _MEMORY:
        return _MEMORY[ident]
    folder = os.environ.get("COURSE_JUDGE_CACHE")
    path = Path(folder) / _code_key() / f"{ident}.json" if folder else None
    if path is not None and path.exists():
        try:
            _MEMORY[ident] = json.loads(path.read_text())
            return _MEMORY[ident]
        except (OSError, ValueError):
            pass
    value = compute()
    _MEMORY[ident] = value
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        unfinished = path.with_suffix(f".{os.getpid()}.tmp")
        unfinished.write_text(json.dumps(value))
        os.replace(unfinished, path)  # atomic: workers computing the same result at once agree
    return value


# ---------------------------------------------------------------------------------------------- training
def conv_block(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True, norm: Callable | None = None,
               **kwargs) -> nn.Sequential:
    """The lesson's block: conv (bias only without a norm) -> GeneralRelu -> norm(nf) (nn.BatchNorm2d by default)."""
    from course_lib import GeneralRelu

    layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn), GeneralRelu(**kwargs)]
    if bn:
        layers.append((norm or (lambda n: nn.BatchNorm2d(n, eps=1e-5, momentum=0.1)))(nf))
    return nn.Sequential(*layers)


def lesson_cnn(norm: Callable | None = None, bn: bool = True) -> nn.Sequential:
    """The lesson's CNN (10 classes) with the given norm factory (a function of the channel count)."""
    return cnn_of(functools.partial(conv_block, bn=bn, norm=norm))


def _losses(make_model: Callable[[], nn.Module], **run: object) -> dict:
    shapes: list[list[int]] = []
    _, losses = training_run(make_model, built=lambda model: shapes.extend(weight_shapes(model)), **run)
    return {"losses": losses, "shapes": shapes}


def reference_losses(name: str, make_model: Callable[[], nn.Module], **run: object) -> dict:
    """{'losses', 'shapes'} of the reference model trained as the probes train the student's (probes.training_run
    with `run`'s settings), cached by name and settings."""
    return cached(name, lambda: _losses(make_model, **run), **run)


def expect_training(r: Records, key: str, reference: dict, what: str, rtol: float) -> None:
    """The student's recorded run (key, key/shapes) against the reference run."""
    losses = r.get(key)
    if r.has(f"{key}/shapes"):
        shapes = r.get(f"{key}/shapes")
        if shapes != reference["shapes"]:
            if not isinstance(shapes, list) or len(shapes) != len(reference["shapes"]):
                raise Fail(f"{what}: the model has {len(shapes) if isinstance(shapes, list) else '?'} conv/linear layers; "
                           f"the lesson's CNN has {len(reference['shapes'])}")
            i = next(i for i, (a, b) in enumerate(zip(shapes, reference["shapes"])) if a != b)
            raise Fail(f"{what}: layer {i + 1} has weight shape {tuple(shapes[i])}; expected {tuple(reference['shapes'][i])}")
    expect_curve_like(losses, reference["losses"], what, rtol=rtol)

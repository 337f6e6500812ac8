"""The judge's own answers: reference implementations of every contract, and the reference training runs.

Nothing here is ever imported by a grading kernel. Training references are deterministic (CPU, one thread,
seeded) and cached: in memory, and on disk under COURSE_JUDGE_CACHE when the grader sets it (a private
folder), keyed by the code that computes them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from course_judge.records import Fail, Records
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
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(value))
        os.replace(partial, path)  # atomic: workers computing the same result at once agree
    return value


def single_threaded(fn: Callable) -> Callable:
    """Run fn with one torch thread (the same numbers on every machine and in every run)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


__all__ = ["same_inputs", "cached", "single_threaded", "F", "nn"]

"""The record format: what a grading kernel sends the judge, as plain JSON.

A kernel cannot be trusted, so nothing here decides anything: it only turns results into data. The judge
(course_judge.records) parses it with its own code and treats every field as a claim to be checked.

    tensor     {"t": "tensor", "dtype": "torch.float64", "shape": [...], "data": base64 of float64 or int64
                little-endian bytes, "requires_grad": bool, "grad_fn": name or null, "parameter": bool}
    raised     {"t": "raised", "type": "ValueError", "bases": ["ValueError", "Exception", ...], "message": "..."}
    list/dict  {"t": "list", "items": [...]} / {"t": "dict", "items": {"key": ...}}
    other      {"t": "object", "type": "Foo", "repr": "..."}
    numbers, strings, booleans and None are themselves.
"""

from __future__ import annotations

import base64
import hashlib
import math

import torch

MAX_TEXT = 500  # characters kept of a message or repr: a record is evidence, not a channel


class Raised:
    """An exception the student's code raised, kept as data."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _plain_tensor(value: torch.Tensor) -> torch.Tensor:
    """The tensor's own data as a plain CPU tensor (a subclass's __torch_function__ is not consulted)."""
    with torch._C.DisableTorchFunctionSubclass():
        return torch.Tensor.detach(value).cpu().contiguous()


def encode(value: object, depth: int = 0) -> object:
    """`value` as JSON-able data (see the module docstring)."""
    if depth > 8:
        return {"t": "object", "type": "too deep", "repr": ""}
    if isinstance(value, Raised):
        exc = value.exc
        return {"t": "raised", "type": type(exc).__name__, "bases": [c.__name__ for c in type(exc).__mro__],
                "message": str(exc)[:MAX_TEXT]}
    if isinstance(value, torch.Tensor):
        plain = _plain_tensor(value)
        wide = plain.to(torch.float64) if plain.is_floating_point() or plain.is_complex() else plain.to(torch.int64)
        return {"t": "tensor", "dtype": str(value.dtype), "shape": list(plain.shape),
                "data": base64.b64encode(wide.numpy().tobytes()).decode(),
                "requires_grad": bool(value.requires_grad),
                "grad_fn": type(value.grad_fn).__name__ if value.grad_fn is not None else None,
                "parameter": isinstance(value, torch.nn.Parameter)}
    if value is None or isinstance(value, (bool, int, str)):
        return value if not isinstance(value, str) else value[:MAX_TEXT]
    if isinstance(value, float):
        return value if math.isfinite(value) else {"t": "float", "repr": repr(value)}
    if isinstance(value, (list, tuple)):
        return {"t": "list", "kind": type(value).__name__, "items": [encode(v, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"t": "dict", "items": {str(k): encode(v, depth + 1) for k, v in value.items()}}
    try:
        text = repr(value)[:MAX_TEXT]
    except Exception:  # noqa: BLE001 - a repr that raises is still evidence of a wrong type
        text = "?"
    return {"t": "object", "type": type(value).__name__, "repr": text}


def digest(t: torch.Tensor) -> str:
    """A short fingerprint of a tensor's dtype, shape and values (the judge recomputes it for its own inputs)."""
    plain = _plain_tensor(t)
    h = hashlib.sha256(f"{plain.dtype}{tuple(plain.shape)}".encode())
    h.update(plain.numpy().tobytes())
    return h.hexdigest()[:16]

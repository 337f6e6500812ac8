"""The record format: what a grading kernel sends the judge, as plain JSON.

A kernel cannot be trusted, so nothing here decides anything: it only turns results into data. The judge
(course_judge.records) parses it with its own code and treats every field as a claim to be checked.

    tensor     {"t": "tensor", "dtype": "torch.float64", "shape": [...], "data": base64 of float64 or int64
                little-endian bytes, "requires_grad": bool, "grad_fn": name or null, "parameter": bool}
    raised     {"t": "raised", "type": "ValueError", "bases": ["ValueError", "Exception", ...], "message": "..."}
    list/dict  {"t": "list", "items": [...]} / {"t": "dict", "items": {"key": ...}}
    other      {"t": "object", "type": "Foo", "repr": "..."}
    too large  {"t": "too large", "what": "tensor", "size": 4000000, "shape": [...], "dtype": "..."}: a value over
               a cap below, recorded as a summary (the judge fails the test saying so)
    numbers, strings, booleans and None are themselves.

Sizes are capped (issue 18): a student's object can be as large as the kernel's memory, and everything recorded
is held, sent and parsed by the grader. The caps are far above what any correct layer's records need (measured
over the reference solutions and every catalogued variant: the largest tensor 12,000 elements, the longest list 30
items, the largest dict 10 keys, a whole test's records 190 keys, 274 kB), so a value over one is never a right
answer, and its test fails with "too large" rather than being judged on part of it.
"""

from __future__ import annotations

import base64
import hashlib
import math

import torch

MAX_TEXT = 500  # characters kept of a message, a repr or a string: a record is evidence, not a channel
MAX_NAME = 200  # characters kept of an exception's type name and of each of its bases' names
MAX_BASES = 32  # an exception's bases kept (its type's __mro__: a handful for any real exception)
MAX_ELEMENTS = 100_000  # a tensor's elements recorded (about 1 MB of JSON); a larger one is TOO_LARGE
MAX_ITEMS = 1_000  # a list's, tuple's or dict's items recorded; a longer one is TOO_LARGE
MAX_TOTAL_ELEMENTS = 500_000  # tensor elements one test records in all; tensors past it are TOO_LARGE
MAX_INT_BITS = 64  # an integer wider than this is recorded as an object (JSON and the judge read it as a number)
TOO_LARGE = "too large"  # the kind of the summary recorded for a value over a cap


class Raised:
    """An exception the student's code raised, kept as data."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _plain_tensor(value: torch.Tensor) -> torch.Tensor:
    """The tensor's own data as a plain CPU tensor (a subclass's __torch_function__ is not consulted)."""
    with torch._C.DisableTorchFunctionSubclass():
        return torch.Tensor.detach(value).cpu().contiguous()


class Budget:
    """The tensor elements one test may still record (MAX_TOTAL_ELEMENTS), shared by its records."""

    def __init__(self, elements: int = MAX_TOTAL_ELEMENTS) -> None:
        self.elements = elements


def _too_large(what: str, size: int, **facts: object) -> dict:
    return {"t": TOO_LARGE, "what": what, "size": int(size), **facts}


CUT = "... (truncated)"


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, saying so when it was cut."""
    return text if len(text) <= limit else text[:limit - len(CUT)] + CUT


def _name(cls: type) -> str:
    try:
        return cut(str(cls.__name__), MAX_NAME)
    except Exception:  # noqa: BLE001 - a metaclass can make even the name raise
        return "?"


def _message(exc: BaseException) -> str:
    try:
        return cut(str(exc), MAX_TEXT)
    except Exception:  # noqa: BLE001 - a __str__ that raises still leaves the type as evidence
        return "?"


def encode(value: object, depth: int = 0, budget: Budget | None = None) -> object:
    """`value` as JSON-able data (see the module docstring); values over the caps as TOO_LARGE summaries."""
    budget = budget if budget is not None else Budget()
    if depth > 8:
        return {"t": "object", "type": "too deep", "repr": ""}
    if isinstance(value, Raised):
        exc = value.exc
        return {"t": "raised", "type": _name(type(exc)), "bases": [_name(c) for c in type(exc).__mro__[:MAX_BASES]],
                "message": _message(exc)}
    if isinstance(value, torch.Tensor):
        with torch._C.DisableTorchFunctionSubclass():  # a subclass's numel/shape are not consulted
            size, shape = torch.Tensor.numel(value), [int(s) for s in torch.Tensor.size(value)][:16]
        limit = min(MAX_ELEMENTS, budget.elements)
        if size > limit:
            return _too_large("tensor", size, shape=shape, dtype=str(value.dtype)[:MAX_NAME], limit=limit)
        budget.elements -= size
        plain = _plain_tensor(value)
        wide = plain.to(torch.float64) if plain.is_floating_point() or plain.is_complex() else plain.to(torch.int64)
        return {"t": "tensor", "dtype": str(value.dtype), "shape": list(plain.shape),
                "data": base64.b64encode(wide.numpy().tobytes()).decode(),
                "requires_grad": bool(value.requires_grad),
                "grad_fn": type(value.grad_fn).__name__ if value.grad_fn is not None else None,
                "parameter": isinstance(value, torch.nn.Parameter)}
    if isinstance(value, int) and not isinstance(value, bool) and abs(value).bit_length() > MAX_INT_BITS:
        return {"t": "object", "type": "int", "repr": f"an integer of {abs(value).bit_length()} bits"}
    if value is None or isinstance(value, (bool, int, str)):
        return value if not isinstance(value, str) else value[:MAX_TEXT]
    if isinstance(value, float):
        return value if math.isfinite(value) else {"t": "float", "repr": repr(value)}
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ITEMS:
            return _too_large("list", len(value), limit=MAX_ITEMS)
        return {"t": "list", "kind": _name(type(value)), "items": [encode(v, depth + 1, budget) for v in value]}
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            return _too_large("dict", len(value), limit=MAX_ITEMS)
        return {"t": "dict", "items": {str(k)[:MAX_TEXT]: encode(v, depth + 1, budget) for k, v in value.items()}}
    try:
        text = cut(repr(value), MAX_TEXT)
    except Exception:  # noqa: BLE001 - a repr that raises is still evidence of a wrong type
        text = "?"
    return {"t": "object", "type": _name(type(value)), "repr": text}


def digest(t: torch.Tensor) -> str:
    """A short fingerprint of a tensor's dtype, shape and values (the judge recomputes it for its own inputs)."""
    plain = _plain_tensor(t)
    h = hashlib.sha256(f"{plain.dtype}{tuple(plain.shape)}".encode())
    h.update(plain.numpy().tobytes())
    return h.hexdigest()[:16]

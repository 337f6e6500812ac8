"""Read a test cell's record bundle (course_recorder.wire's format) without trusting it.

Every field is a claim: a bundle that is missing, sent twice, for another test or malformed fails the
test with a message saying so; a key the judge asks for and does not find fails it too.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import torch

from course_recorder import ABORTED, MIME
_DTYPES = {str(d): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int16,
                               torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128)}


class Fail(AssertionError):
    """A failed check; its message is what the student reads.

    `mistake`: the catalogued mistake the check named (the sentence after compare.NAMED_MISTAKE in the message), as
    data: the message also quotes the student's own text, so nothing reads a named mistake back out of it.
    """

    def __init__(self, *args: object, mistake: str | None = None) -> None:
        super().__init__(*args)
        self.mistake = mistake


class Malformed(Fail):
    """A record that does not have the format it claims."""


@dataclass(frozen=True)
class Raised:
    """An exception the student's code raised (as recorded)."""

    type: str
    bases: tuple[str, ...]
    message: str

    def is_a(self, name: str) -> bool:
        return name in self.bases

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


@dataclass(frozen=True)
class Other:
    """A value that is neither a tensor, a number, a string nor a container (its type name and repr)."""

    type: str
    repr: str


def decode(value: object, depth: int = 0) -> object:
    """Data -> Python: tensors (with `.recorded`: requires_grad, grad_fn, parameter), Raised, Other, lists..."""
    if depth > 10:
        raise Malformed("a record is nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):  # plain JSON lists (digests) are kept as they are
        return [decode(v, depth + 1) for v in value]
    if not isinstance(value, dict) or not isinstance(value.get("t"), str):
        raise Malformed(f"a record has an unknown form ({type(value).__name__})")
    kind = value["t"]
    try:
        if kind == "tensor":
            return _tensor(value)
        if kind == "raised":
            return Raised(str(value["type"]), tuple(str(b) for b in value["bases"]), str(value["message"]))
        if kind == "list":
            items = [decode(v, depth + 1) for v in value["items"]]
            return tuple(items) if value.get("kind") == "tuple" else items
        if kind == "dict":
            return {str(k): decode(v, depth + 1) for k, v in dict(value["items"]).items()}
        if kind == "float":
            return float(value["repr"])
        if kind == "object":
            return Other(str(value["type"]), str(value["repr"]))
    except (KeyError, TypeError, ValueError) as err:
        raise Malformed(f"a {kind} record is malformed ({type(err).__name__}: {err})") from None
    raise Malformed(f"a record has an unknown kind {kind!r}")


def _tensor(value: dict) -> torch.Tensor:
    dtype = _DTYPES.get(value["dtype"])
    if dtype is None:
        raise Malformed(f"a tensor record has an unknown dtype {value['dtype']!r}")
    shape = [int(s) for s in value["shape"]]
    if any(s < 0 for s in shape) or len(shape) > 8:
        raise Malformed(f"a tensor record has an impossible shape {shape}")
    try:
        raw = base64.b64decode(value["data"], validate=True)
    except (binascii.Error, TypeError) as err:
        raise Malformed(f"a tensor record's data is not base64 ({err})") from None
    wide = torch.float64 if (dtype.is_floating_point or dtype.is_complex) else torch.int64
    if dtype.is_complex:
        raise Malformed("complex tensors are not part of any contract here")
    numel = 1
    for s in shape:
        numel *= s
    if len(raw) != numel * 8:
        raise Malformed(f"a tensor record of shape {shape} holds {len(raw)} bytes, not {numel * 8}")
    t = torch.frombuffer(bytearray(raw), dtype=wide).reshape(shape).to(dtype) if numel else torch.empty(shape, dtype=dtype)
    t.recorded = {"requires_grad": bool(value.get("requires_grad")), "grad_fn": value.get("grad_fn"),
                  "parameter": bool(value.get("parameter"))}
    return t


class Records:
    """The decoded records of one test, or the reason there are none."""

    def __init__(self, test: str, records: dict[str, object] | None, problem: str = "") -> None:
        self.test = test
        self._raw = records or {}
        self.problem = problem
        self._decoded: dict[str, object] = {}

    @classmethod
    def from_outputs(cls, test: str, outputs: list) -> Records:
        """The one bundle among a cell's outputs; missing, duplicated, foreign or malformed bundles are a problem."""
        bundles = [o.get("data", {}).get(MIME) for o in outputs
                   if o.get("output_type") in ("display_data", "execute_result") and MIME in o.get("data", {})]
        if not bundles:
            return cls(test, None, "missing")
        if len(bundles) > 1:
            return cls(test, None, f"duplicated: the test sent {len(bundles)} sets of results instead of one")
        bundle = bundles[0]
        if not isinstance(bundle, dict) or not isinstance(bundle.get("records"), dict):
            return cls(test, None, "malformed: the results are not in the recorder's format")
        if bundle.get("test") != test:
            return cls(test, None, f"malformed: the results are labelled {str(bundle.get('test'))[:60]!r}, not {test!r}")
        return cls(test, bundle["records"])

    def has(self, key: str) -> bool:
        return key in self._raw

    def keys(self) -> list[str]:
        """The recorded keys (as claimed by the kernel: names only, nothing decoded)."""
        return [str(k) for k in self._raw]

    def get(self, key: str) -> object:
        """The decoded record `key`; Fail when it is missing or malformed."""
        if key not in self._decoded:
            if key not in self._raw:
                raise Missing(key)
            self._decoded[key] = decode(self._raw[key])
        return self._decoded[key]

    def aborted(self) -> Raised | None:
        """Why the probe stopped early, if it did."""
        if ABORTED not in self._raw:
            return None
        value = self.get(ABORTED)
        return value if isinstance(value, Raised) else Raised("?", (), str(value))


class Missing(Fail):
    """A result the judge needs was not recorded."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

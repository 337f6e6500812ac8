"""Read a test cell's record bundle (course_recorder.wire's format) without trusting it.

Every field is a claim: a bundle that is missing, sent twice, for another test or malformed fails the
test with a message saying so; a key the judge asks for and does not find fails it too.

Whatever a record holds (a student can display a bundle of their own: wrong types, missing keys, NaN, huge
integers, deep nesting, megabytes of text), reading it either gives the values a probe would have recorded or
raises Malformed, never anything else: the caps of course_recorder.wire are applied again here (the kernel can
skip them), texts are cut before anything quotes them, and a record over a cap (or one the recorder summarised
as too large) raises TooLarge, which fails the test saying so.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import torch

from course_recorder import ABORTED, MIME
from course_recorder.wire import (CUT, MAX_BASES, MAX_ELEMENTS, MAX_INT_BITS, MAX_ITEMS, MAX_NAME, MAX_TEXT,
                                  TOO_LARGE, cut)

MAX_RECORDS = 2_000  # records in one test's bundle (the most a probe makes is 190)
MAX_DEPTH = 10  # nesting of one record (a probe's deepest is 3)
MAX_FLOAT_REPR = 40  # characters of a non-finite float's repr ("nan", "-inf")
_DTYPES = {str(d): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int16,
                               torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128)}


class Fail(AssertionError):
    """A failed check; its message is what the student reads.

    `mistake`: the id (course_lib.mistakes) of the catalogued mistake the check named, whose sentence follows
    compare.NAMED_MISTAKE in the message, as data: the message also quotes the student's own text, so nothing reads
    a named mistake back out of it.
    """

    def __init__(self, *args: object, mistake: str | None = None) -> None:
        super().__init__(*args)
        self.mistake = mistake


class Malformed(Fail):
    """A record that does not have the format it claims."""


class TooLarge(Malformed):
    """A record over the recorder's caps (course_recorder.wire), or the recorder's summary of one."""


def quote(value: object, limit: int = 60) -> str:
    """A claimed value as text for a message, never longer than `limit` (+ a notice): only strings and small
    numbers are quoted, anything else by its type (str() of a huge int or a deep list can raise, or take long)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + CUT
    if isinstance(value, (bool, float)) or value is None or (isinstance(value, int) and value.bit_length() <= 64):
        return repr(value)
    return f"a {type(value).__name__}"


def _cut(value: object, limit: int, what: str) -> str:
    """A claimed text, in at most `limit` characters (the cut said, as the recorder says it)."""
    if not isinstance(value, str):
        raise Malformed(f"a record's {what} is {quote(value)}, not text")
    return cut(value, limit)


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


def _items(value: object, kind: type) -> list | dict:
    if not isinstance(value, kind):
        raise Malformed(f"a record's items are {quote(value)}, not a {kind.__name__}")
    if len(value) > MAX_ITEMS:
        raise TooLarge(f"a {kind.__name__} of {len(value)} items (the grader records at most {MAX_ITEMS})")
    return value


def _too_large(value: dict) -> TooLarge:
    """The recorder's summary of a value over its caps, quoted (its fields are claims too)."""
    what = quote(value.get("what"), 20)
    size = value.get("size")
    shape = value.get("shape")
    shown = f" of shape {[s for s in shape[:8] if isinstance(s, int) and s.bit_length() <= 64]}" \
        if isinstance(shape, list) and what == "tensor" else ""
    count = f" of {size} elements" if isinstance(size, int) and size.bit_length() <= 64 else ""
    return TooLarge(f"a {what}{shown}{count} (the grader records at most {MAX_ELEMENTS} elements of a tensor and "
                    f"{MAX_ITEMS} items of a list)")


def decode(value: object, depth: int = 0) -> object:
    """Data -> Python: tensors (with `.recorded`: requires_grad, grad_fn, parameter), Raised, Other, lists...

    Raises Malformed (TooLarge for values over the caps) for anything a probe would not have recorded."""
    if depth > MAX_DEPTH:
        raise Malformed("a record is nested too deeply")
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise Malformed(f"a record holds an integer of {value.bit_length()} bits")
        return value
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, list):  # plain JSON lists (digests) are kept as they are
        return [decode(v, depth + 1) for v in _items(value, list)]
    if not isinstance(value, dict) or not isinstance(value.get("t"), str):
        raise Malformed(f"a record has an unknown form ({type(value).__name__})")
    kind = value["t"]
    if kind == TOO_LARGE:
        raise _too_large(value)
    try:
        if kind == "tensor":
            return _tensor(value)
        if kind == "raised":
            bases = _items(value["bases"], list)[:MAX_BASES]
            return Raised(_cut(value["type"], MAX_NAME, "exception type"),
                          tuple(_cut(b, MAX_NAME, "exception base") for b in bases),
                          _cut(value["message"], MAX_TEXT, "exception message"))
        if kind == "list":
            items = [decode(v, depth + 1) for v in _items(value["items"], list)]
            return tuple(items) if value.get("kind") == "tuple" else items
        if kind == "dict":
            return {str(k)[:MAX_TEXT]: decode(v, depth + 1) for k, v in _items(value["items"], dict).items()}
        if kind == "float":
            return float(_cut(value["repr"], MAX_FLOAT_REPR, "number"))
        if kind == "object":
            return Other(_cut(value["type"], MAX_NAME, "type"), _cut(value["repr"], MAX_TEXT, "repr"))
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise Malformed(f"a {quote(kind, 20)} record is malformed ({type(err).__name__}: {quote(str(err), 80)})") from None
    raise Malformed(f"a record has an unknown kind {quote(kind, 20)}")


def _tensor(value: dict) -> torch.Tensor:
    dtype = _DTYPES.get(value["dtype"]) if isinstance(value["dtype"], str) else None
    if dtype is None:
        raise Malformed(f"a tensor record has an unknown dtype {quote(value['dtype'], 30)}")
    shape = value["shape"]
    if not isinstance(shape, list) or len(shape) > 8 or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2 ** 63 for s in shape):
        raise Malformed(f"a tensor record has an impossible shape ({quote(shape, 80)})")
    wide = torch.float64 if (dtype.is_floating_point or dtype.is_complex) else torch.int64
    if dtype.is_complex:
        raise Malformed("complex tensors are not part of any contract here")
    numel = 1
    for s in shape:
        numel *= s
    if numel > MAX_ELEMENTS or max(shape, default=0) > MAX_ELEMENTS:
        raise TooLarge(f"a tensor of shape {shape} ({numel} elements; the grader records at most {MAX_ELEMENTS})")
    data = value["data"]
    if not isinstance(data, str) or len(data) != (numel * 8 + 2) // 3 * 4:  # checked before decoding it
        raise Malformed(f"a tensor record of shape {shape} does not hold {numel} values")
    grad_fn = value.get("grad_fn")
    if grad_fn is not None and not isinstance(grad_fn, str):
        raise Malformed(f"a tensor record's grad_fn is {quote(grad_fn)}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, TypeError, ValueError) as err:
        raise Malformed(f"a tensor record's data is not base64 ({quote(str(err), 80)})") from None
    if len(raw) != numel * 8:
        raise Malformed(f"a tensor record of shape {shape} holds {len(raw)} bytes, not {numel * 8}")
    t = torch.frombuffer(bytearray(raw), dtype=wide).reshape(shape).to(dtype) if numel else torch.empty(shape, dtype=dtype)
    t.recorded = {"requires_grad": bool(value.get("requires_grad")), "grad_fn": grad_fn and grad_fn[:MAX_NAME],
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
        bundles = [o["data"][MIME] for o in outputs if isinstance(o, dict) and isinstance(o.get("data"), dict)
                   and o.get("output_type") in ("display_data", "execute_result") and MIME in o["data"]]
        if not bundles:
            return cls(test, None, "missing")
        if len(bundles) > 1:
            return cls(test, None, f"duplicated: the test sent {len(bundles)} sets of results instead of one")
        bundle = bundles[0]
        if not isinstance(bundle, dict) or not isinstance(bundle.get("records"), dict):
            return cls(test, None, "malformed: the results are not in the recorder's format")
        if bundle.get("test") != test:
            return cls(test, None, f"malformed: the results are labelled {quote(bundle.get('test'))}, not {test!r}")
        if len(bundle["records"]) > MAX_RECORDS:
            return cls(test, None, f"malformed: the test sent {len(bundle['records'])} results (none sends more than "
                                   f"{MAX_RECORDS})")
        if not all(isinstance(key, str) for key in bundle["records"]):
            return cls(test, None, "malformed: the results are not in the recorder's format")
        return cls(test, bundle["records"])

    def has(self, key: str) -> bool:
        return key in self._raw

    def keys(self) -> list[str]:
        """The recorded keys (as claimed by the kernel: names only, nothing decoded)."""
        return [str(k) for k in self._raw]

    def get(self, key: str) -> object:
        """The decoded record `key`; Fail when it is missing or malformed (whatever it holds)."""
        if key not in self._decoded:
            if key not in self._raw:
                raise Missing(key)
            try:
                self._decoded[key] = decode(self._raw[key])
            except Fail:
                raise
            except Exception as err:  # noqa: BLE001 - whatever a record makes the reading do, the record is wrong
                raise Malformed(f"the record {quote(key)} cannot be read ({type(err).__name__})") from None
        return self._decoded[key]

    def aborted(self) -> Raised | None:
        """Why the probe stopped early, if it did (a record that claims so, readable or not, says it did)."""
        if ABORTED not in self._raw:
            return None
        try:
            value = self.get(ABORTED)
        except Fail as err:
            return Raised("?", (), f"its record of why cannot be read ({str(err)[:MAX_TEXT]})")
        return value if isinstance(value, Raised) else Raised("?", (), f"it recorded {quote(value)}")


class Missing(Fail):
    """A result the judge needs was not recorded."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

"""All a grading kernel imports of the grading code: run the student's code on the tests' inputs and record
what came back. No reference math and no expected values live here.

A hidden test cell calls one probe (course_recorder.qN), which builds the inputs, calls the student's
code and records the raw results (tensors, losses, shapes, the exceptions raised) under keys, then sends
them as one record bundle: a display output of type MIME in the test cell. The judge (course_judge, in the
grader's own process, which the kernel can neither see nor reach) regenerates the inputs, computes the
right answers with its own reference implementations and writes the verdict into the cell. Whatever the
student's code does in the kernel (patch this package, IPython, torch), the only way to a test's points
is to produce the right values.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch

from course_recorder.guard import ACTIVE, Evidence, own_implementation
from course_recorder.wire import Budget, Raised, digest, encode

MIME = "application/vnd.normalization-course.record+json"
VERSION = 1
GUARD = "#guard"  # the suffix of what the refusal saw during a call (course_recorder.guard.Evidence)
ABORTED = "__aborted__"  # the key of a probe that stopped early, with the exception that stopped it

_sink: Callable[[dict], None] | None = None


def set_sink(sink: Callable[[dict], None] | None) -> None:
    """Send bundles to `sink` instead of IPython's display (the mutation harness runs cells without a kernel)."""
    global _sink
    _sink = sink


def _send(bundle: dict) -> None:
    if _sink is not None:
        _sink(bundle)
        return
    from IPython.display import display

    summary = f"recorded {len(bundle['records'])} result(s) for the judge"
    display({MIME: bundle, "text/plain": summary}, raw=True)


class Recorder:
    """The results of one hidden test, keyed by name; sent once, as one bundle, when the test ends."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.records: dict[str, object] = {}
        self.budget = Budget()  # the tensor elements this test may still record (wire.MAX_TOTAL_ELEMENTS)

    def put(self, key: str, value: object) -> None:
        """Record a value (a tensor, a number, a list, a Raised...) under `key`."""
        if key in self.records:
            raise KeyError(f"probe bug: {self.test} records {key!r} twice")
        self.records[key] = encode(value, budget=self.budget)

    def call(self, key: str, fn: Callable, *args: object, own: str | None = None, **kwargs: object) -> object:
        """fn(*args, **kwargs), its result (or the exception it raised) recorded under `key`.

        With `own` set (the layer's name), torch's normalization refuses to run meanwhile, at the function and at
        the operator level (course_recorder.guard), and the result is recorded before the refusal ends; what the
        refusal saw is recorded under `key#guard` for the judge (also when a refusal of course_lib's combiner
        happened inside the call). The tensor arguments' fingerprints after the call are recorded under `key#in`
        (a layer that changes its input in place shows there). Returns the result, or a Raised.
        """
        evidence = Evidence()
        ACTIVE.append(evidence)  # a refusal inside the call (course_lib's combiner too) is noted here
        try:
            with contextlib.ExitStack() as stack:
                if own:
                    stack.enter_context(own_implementation(own, evidence))
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # a warning on stderr is not the student's answer
                        result = fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - whatever the student's code raises is a result
                    result = Raised(exc)
                self.put(key, result)
                self.put(f"{key}#in", [digest(a) for a in args if isinstance(a, torch.Tensor)])
        finally:
            ACTIVE.remove(evidence)
        if own or evidence.refused:
            self.put(f"{key}{GUARD}", evidence.record())
        return result

    def send(self) -> None:
        _send({"test": self.test, "version": VERSION, "records": self.records})


@contextlib.contextmanager
def recording(test: str) -> Iterator[Recorder]:
    """A Recorder for the hidden test `test`; whatever happens, what it holds is sent at the end.

    A probe that stops early (the student's code raised outside a recorded call, or an interrupt) records
    why under ABORTED; the judge reports it. Nothing propagates into the cell: its error output would show
    a traceback through the probe.
    """
    rec = Recorder(test)
    try:
        yield rec
    except Exception as exc:  # noqa: BLE001
        rec.records.pop(ABORTED, None)
        rec.put(ABORTED, Raised(exc))
    except BaseException as exc:  # KeyboardInterrupt (a cell timeout), SystemExit: record, then let it go on
        rec.records.pop(ABORTED, None)
        rec.put(ABORTED, Raised(exc))
        rec.send()
        raise
    rec.send()


__all__ = ["MIME", "VERSION", "GUARD", "ABORTED", "Recorder", "recording", "set_sink", "Raised", "digest", "encode"]

"""While a probe runs the student's own implementation, torch's normalization and course_lib's combiner refuse to run.

The rule that a layer must do its own math is enforced where every route to torch's normalization meets, not
on the names a student might use to reach it:

- `RefuseNorms`, a TorchFunctionMode, refuses torch's normalization *functions* (F.batch_norm, torch.layer_norm,
  F.rms_norm...) however they were reached: a reference taken before the probe, `vars(F)[...]`, a string built
  at run time, a partial, an nn module (its forward calls them) all end in the same function, which consults the
  mode. The mode is consulted by the function object itself, so no copy of a reference escapes it.
- `RefuseKernels`, a TorchDispatchMode, refuses the aten normalization *kernels* at the operator dispatcher:
  `torch.ops.aten.native_batch_norm` and kin, which sit below the function level. (On the CPU F.rms_norm and
  aten's rms_norm and _fused_rms_norm are composed of plain operators, so only the function level can see them:
  a torch.ops call from Python consults the function mode too, which refuses it by its operator's name.)
- course_lib's `combine_scheds` is plain Python, which no torch mode sees: `refuse_code` refuses any Python
  frame running its code, or a copy of it (a function rebuilt from its code object has the same bytecode), with a
  trace function that looks at each call.

Each refusal raises DelegationError inside the student's code and is remembered even if the student's code
catches it. `Evidence` is what a probe records beside the result: whether the modes were still in place after
the call (a canary kernel refused), how many operators the student's code ran under them, and what was
refused. The judge reads it (course_judge): a refusal costs the test its points, missing evidence too.

Student code runs in the same process and can, in principle, pop a mode off torch's stack or clear the trace
function. Doing so needs torch._C, torch.utils._python_dispatch or sys.settrace, which the judge's audit treats
as tampering; docs/GRADING_PIPELINE.md says what remains possible.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import CodeType, FrameType

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode


class DelegationError(RuntimeError):
    """Raised by torch's normalization while a probe runs the student's own implementation."""


# The functions: torch's public normalization entry points (each consults torch function modes).
_FUNCTIONS = tuple(f for f in (
    F.batch_norm, F.layer_norm, F.instance_norm, F.group_norm, getattr(F, "rms_norm", None), F.local_response_norm,
    torch.batch_norm, torch.layer_norm, torch.instance_norm, torch.group_norm, getattr(torch, "rms_norm", None),
    torch.native_batch_norm, torch.native_layer_norm, torch.native_group_norm,
    getattr(torch, "_native_batch_norm_legit", None),
) if f is not None)
_FUNCTION_NAMES = {f: f"{getattr(f, '__module__', None) or 'torch'}.{f.__name__}".replace("torch.nn.functional",
                                                                                          "F") for f in _FUNCTIONS}
# The kernels: every aten operator that computes a normalization (their overload packets' names).
KERNELS = frozenset({
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "_batch_norm_with_update", "_batch_norm_with_update_functional",
    "_batch_norm_no_update", "batch_norm", "_batch_norm_impl_index", "cudnn_batch_norm", "miopen_batch_norm",
    "batch_norm_stats", "batch_norm_elemt", "batch_norm_gather_stats", "batch_norm_gather_stats_with_counts",
    "batch_norm_update_stats", "native_layer_norm", "layer_norm", "native_group_norm", "group_norm",
    "instance_norm", "rms_norm", "_fused_rms_norm",
})


ACTIVE: list[Evidence] = []  # the evidence of the recorded calls in progress, innermost last (Recorder.call)


@dataclass
class Evidence:
    """What a guarded call left behind: the judge's proof that the refusal was in place."""

    refused: list[str] = field(default_factory=list)  # what the student's code tried to run, in order
    operators: int = 0  # aten operators the student's code ran under the dispatch mode
    intact: bool = False  # after the call both modes were still in place (the canary kernel was refused)

    def record(self) -> dict:
        return {"refused": self.refused[:20], "operators": self.operators, "intact": self.intact}


class RefuseNorms(TorchFunctionMode):
    """Refuse torch's normalization functions, however they were reached."""

    def __init__(self, layer: str, evidence: Evidence) -> None:
        super().__init__()
        self.layer, self.evidence = layer, evidence
        self.canary = False  # the probe's own check that the mode is still in place

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = _FUNCTION_NAMES.get(func)
        if name is None and isinstance(func, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
            name = _operator_name(func)  # torch.ops.aten.rms_norm: on the CPU no kernel reaches the dispatcher
        if name is not None:
            if self.canary:
                raise _Canary()
            self.evidence.refused.append(f"torch's {name}")
            raise DelegationError(f"{self.layer} called torch's {name}")
        return func(*args, **(kwargs or {}))


def _operator_name(op) -> str | None:
    """`torch.ops.aten.<name>` when a torch.ops operator called from Python is a normalization, else None.

    A composite operator (aten's rms_norm and _fused_rms_norm on the CPU) runs as plain operators below: the
    dispatcher never sees a normalization kernel, but the call itself consults the function mode."""
    packet = getattr(op, "overloadpacket", op)
    if getattr(packet, "_qualified_op_name", "").startswith("aten::") and packet.__name__ in KERNELS:
        return f"torch.ops.aten.{packet.__name__}"
    return None


class RefuseKernels(TorchDispatchMode):
    """Refuse the aten normalization kernels at the operator dispatcher, and count the operators that ran."""

    def __init__(self, layer: str, evidence: Evidence) -> None:
        super().__init__()
        self.layer, self.evidence = layer, evidence
        self.canary = False  # the probe's own check that the mode is still in place

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = _KERNEL_OF.get(func)
        if name is None:  # first sight of this operator: is it a normalization kernel? ("" when not)
            packet = getattr(getattr(func, "overloadpacket", None), "__name__", "")
            name = _KERNEL_OF[func] = packet if packet in KERNELS else ""
        if name:
            if self.canary:
                raise _Canary()
            self.evidence.refused.append(f"torch's torch.ops.aten.{name}")
            raise DelegationError(f"{self.layer} ran torch's aten.{name} kernel")
        self.evidence.operators += 1
        return func(*args, **(kwargs or {}))


_KERNEL_OF: dict = {}  # operator -> its name when it is a normalization kernel, else ""


class _Canary(Exception):
    """Raised to the probe alone: the dispatch mode is in place."""


_CANARY_INPUT = torch.zeros(1, 2)


def _kernel_canary() -> None:
    """A normalization kernel for the dispatch mode alone: the function mode (which refuses torch.ops' normalization
    operators by name too) is not consulted while torch functions are disabled; dispatch modes still are."""
    with torch._C.DisableTorchFunction():
        torch.ops.aten.native_layer_norm(_CANARY_INPUT, [2], None, None, 1e-5)


def _modes_intact(function_mode: RefuseNorms, dispatch_mode: RefuseKernels) -> bool:
    """Whether both modes still refuse: each must answer its own canary (a normalization function, then a kernel)."""
    for mode, canary in ((function_mode, lambda: F.layer_norm(_CANARY_INPUT, (2,))), (dispatch_mode, _kernel_canary)):
        mode.canary = True
        try:
            canary()
        except _Canary:
            continue
        except Exception:  # noqa: BLE001 - anything else means that mode is not the one that answered
            return False
        finally:
            mode.canary = False
        return False
    return True


@contextlib.contextmanager
def own_implementation(layer: str, evidence: Evidence | None = None) -> Iterator[Evidence]:
    """While active, torch's normalization raises DelegationError; yields the Evidence, filled in on exit."""
    evidence = evidence if evidence is not None else Evidence()
    function_mode, dispatch_mode = RefuseNorms(layer, evidence), RefuseKernels(layer, evidence)
    with function_mode, dispatch_mode:
        try:
            yield evidence
        finally:
            evidence.intact = _modes_intact(function_mode, dispatch_mode)


# ---- plain Python: course_lib's combiner and copies of its code ----

def _shape(code: CodeType) -> tuple:
    """What a copy of a function shares with the original: its bytecode, names and constants (nested code too)."""
    consts = tuple(_shape(c) if isinstance(c, CodeType) else (type(c).__name__, repr(c)) for c in code.co_consts)
    return code.co_code, code.co_names, code.co_varnames, code.co_freevars, consts


def code_shapes(fn: Callable) -> frozenset:
    """The shapes of a function's code and of every named function nested in it (a comprehension's code is the
    same in anyone's function, so it is not one of them)."""
    found, todo = set(), [fn.__code__]
    while todo:
        code = todo.pop()
        if not code.co_name.startswith("<"):
            found.add(_shape(code))
        todo += [c for c in code.co_consts if isinstance(c, CodeType)]
    return frozenset(found)


@contextlib.contextmanager
def refuse_code(shapes: frozenset, what: str, evidence: Evidence) -> Iterator[Evidence]:
    """While active, a Python frame running code of these shapes (the original or any copy) raises DelegationError.

    A trace function sees every Python call in this thread (and none of the lines: it returns None), so a
    reference taken earlier, a function rebuilt from the code object and a retyped copy are all refused. A
    refusal is also added to the evidence of the recorded call in progress, which the judge reads: CPython
    unsets a trace function once it raises, so the first refusal is the one that counts.
    """
    seen: dict[CodeType, bool] = {}

    def tracer(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            code = frame.f_code
            hit = seen.get(code)
            if hit is None:
                hit = seen[code] = _shape(code) in shapes
            if hit:  # remembered first: CPython unsets a trace function that raises
                evidence.refused.append(what)
                if ACTIVE and ACTIVE[-1] is not evidence:
                    ACTIVE[-1].refused.append(what)
                raise DelegationError(f"called {what}")
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield evidence
    finally:
        evidence.intact = sys.gettrace() is tracer
        sys.settrace(previous)


@functools.cache
def _shapes_of(refused: tuple[Callable, ...]) -> frozenset:
    return frozenset().union(*(code_shapes(inspect.unwrap(f)) for f in refused))


def refusing(fn: Callable, refused: tuple[Callable, ...], what: str) -> Callable:
    """fn, run with the plain-Python functions `refused` (and any copy of their code) refused: course_lib's
    combine_scheds in Q5, torch.nn.utils.fusion for fold_bn, swa_utils.update_bn for recalibrate_bn. A name built at
    run time (getattr(torch.nn.utils, "fuse_conv_bn" + "_eval")) slips past the audit's forbidden names; the call
    itself does not. A decorated helper (update_bn is wrapped by torch.no_grad()) is refused by its own code, not by
    the decorator's wrapper, which every decorated function shares."""
    shapes = _shapes_of(tuple(refused))

    def run(*args: object, **kwargs: object) -> object:
        with refuse_code(shapes, what, Evidence()):
            return fn(*args, **kwargs)

    return run

"""The run-time refusal (course_recorder.guard) and what the judge makes of its evidence: every route to torch's
normalization is refused while a probe runs the student's layer, wherever the reference was taken; a refusal the
student's code catches is still remembered; a refusal switched off leaves evidence; course_lib's combiner is
refused however it was copied; honest code runs untouched.

These run in-process: each route is the body of a layer's forward pass, called as a probe calls it
(Recorder.call with `own`). The whole-pipeline corpus of routes is tests/test_routes.py.
"""

from __future__ import annotations

import functools
import operator
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_judge import REGISTRY, judge_test, load
from course_judge.audit import Audit
from course_recorder import GUARD, MIME, Recorder
from course_recorder.guard import DelegationError, Evidence, code_shapes, refuse_code

X = torch.randn(4, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
_CAPTURED = F.batch_norm  # a reference taken before any probe runs


def _honest(x):
    mean = x.mean((0, 2, 3), keepdim=True)
    return (x - mean) / (x.var((0, 2, 3), keepdim=True, correction=0) + 1e-5).sqrt()


ROUTES = {
    "captured-reference": lambda x: _CAPTURED(x, None, None, training=True),
    "torch.batch_norm": lambda x: torch.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, False),
    "aten-packet": lambda x: torch.ops.aten.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)[0],
    "aten-overload": lambda x: torch.ops.aten.native_batch_norm.default(x, None, None, None, None, True, 0.1, 1e-5)[0],
    "attrgetter": lambda x: operator.attrgetter("batch_norm")(F)(x, None, None, training=True),
    "vars": lambda x: vars(F)["batch" + "_norm"](x, None, None, training=True),
    "partial": lambda x: functools.partial(F.batch_norm, running_mean=None, running_var=None, training=True)(x),
    "module-by-name": lambda x: getattr(nn, "Batch" + "Norm2d")(3).double()(x),
    "functional-module-attribute": lambda x: torch.nn.modules.batchnorm.F.batch_norm(x, None, None, training=True),
    "instance-norm": lambda x: F.instance_norm(x),
    "group-norm-aten": lambda x: torch.ops.aten.native_group_norm(x, None, None, 4, 3, 4, 1, 1e-5)[0],
    "layer-norm": lambda x: nn.LayerNorm(x.shape[1:]).double()(x),
    "rms-norm": lambda x: F.rms_norm(x, x.shape[1:]),
    # On the CPU aten's rms_norm and _fused_rms_norm are made of plain operators: no kernel for the dispatcher to see.
    "rms-norm-aten-packet": lambda x: torch.ops.aten.rms_norm(x, list(x.shape[1:]), None, 1e-6),
    "rms-norm-aten-overload": lambda x: getattr(torch.ops.aten, "rms" + "_norm").default(x, list(x.shape[1:]), None, 1e-6),
    "fused-rms-norm-aten": lambda x: torch.ops.aten._fused_rms_norm(x, list(x.shape[1:]), None, 1e-6)[0],
    "function-copy": lambda x: types.FunctionType(F.batch_norm.__code__, F.batch_norm.__globals__, "mine",
                                                  F.batch_norm.__defaults__)(x, None, None, training=True),
}


def _record(fn, own: str | None = "BatchNorm") -> dict:
    rec = Recorder("test_train_mode_output")
    rec.call("fresh", fn, X, own=own)
    return rec.records


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_route_to_torchs_normalization_is_refused(route):
    records = _record(ROUTES[route])
    assert records["fresh"]["t"] == "raised" and "DelegationError" in records["fresh"]["bases"], records["fresh"]
    seen = records[f"fresh{GUARD}"]["items"]
    assert seen["refused"]["items"] and seen["intact"] is True, seen


def test_a_refusal_caught_by_the_student_is_still_remembered():
    def sly(x):
        try:
            return F.batch_norm(x, None, None, training=True)
        except Exception:  # noqa: BLE001
            return _honest(x)

    seen = _record(sly)[f"fresh{GUARD}"]["items"]
    assert seen["refused"]["items"] == ["torch's F.batch_norm"], seen


def test_honest_code_runs_untouched_and_the_evidence_says_so():
    records = _record(_honest)
    assert records["fresh"]["t"] == "tensor"
    seen = records[f"fresh{GUARD}"]["items"]
    assert seen["refused"]["items"] == [] and seen["intact"] is True and seen["operators"] > 0, seen
    before = F.batch_norm(X, None, None, training=True)  # and torch works again afterwards
    assert before.shape == X.shape


def test_a_refusal_switched_off_for_good_leaves_evidence():
    def pops(x):
        torch._C._pop_torch_function_stack()  # the function mode, gone for the rest of the call
        return _CAPTURED(x, None, None, training=True)

    with pytest.raises(Exception):  # noqa: PT011 - leaving the modes in a broken state is the student's doing
        _record(pops)
    # After the damage, no stack is left behind in this process: the next probe refuses again.
    assert _record(ROUTES["captured-reference"])["fresh"]["t"] == "raised"


def test_a_refusal_of_the_combiner_inside_a_recorded_call_reaches_its_evidence():
    from course_lib import schedulers

    def guarded(pcts, scheds):
        with refuse_code(code_shapes(schedulers.combine_scheds), "course_lib's combine_scheds", Evidence()):
            try:
                return schedulers.combine_scheds(pcts, scheds)
            except DelegationError:
                return None  # caught by the student: the recorded evidence keeps it anyway

    rec = Recorder("test_combine_values")
    rec.call("case0", guarded, [1.0], [lambda p: p])
    assert rec.records[f"case0{GUARD}"]["items"]["refused"]["items"] == ["course_lib's combine_scheds"]


def test_a_refusal_replaced_by_an_impostor_mode_leaves_evidence():
    from torch.overrides import TorchFunctionMode

    class Impostor(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    def swaps(x):
        torch._C._pop_torch_function_stack()
        torch._C._push_on_torch_function_stack(Impostor())
        return _honest(x)

    seen = _record(swaps)[f"fresh{GUARD}"]["items"]
    assert seen["intact"] is False, seen
    assert _record(ROUTES["captured-reference"])["fresh"]["t"] == "raised"  # the next probe refuses again


def _judge(records: dict):
    load("Q3")
    bundle = {"output_type": "display_data", "data": {MIME: {"test": "test_train_mode_output", "version": 1,
                                                             "records": records}}, "metadata": {}}
    return judge_test(REGISTRY[("Q3", "test_train_mode_output")], "test_train_mode_output", [bundle], Audit())


def test_the_judge_fails_a_refused_call_as_delegation_and_right_values_without_proof():
    refused = {"refused": ["torch's torch.ops.aten.native_batch_norm"], "operators": 3, "intact": True}
    verdict = _judge({f"fresh{GUARD}": {"t": "dict", "items": refused}})
    assert not verdict.passed and "called torch's torch.ops.aten.native_batch_norm" in verdict.message
    assert "delegating to torch's own normalization" in verdict.message
    verdict = _judge({})
    assert not verdict.passed


def test_course_libs_combiner_is_refused_however_it_was_copied():
    """Each route raises DelegationError and is remembered (the first refusal is the one that counts: CPython
    unsets a trace function once it raises)."""
    from course_lib import schedulers

    early = schedulers.combine_scheds
    rebuilt = types.FunctionType(early.__code__, early.__globals__, "mine", early.__defaults__, early.__closure__)
    renamed = types.FunctionType(early.__code__.replace(co_name="mine"), early.__globals__)
    lin = [lambda p: p, lambda p: 1 - p]
    for route in (early, rebuilt, renamed, schedulers.__dict__["combine" + "_scheds"]):
        with refuse_code(code_shapes(schedulers.combine_scheds), "course_lib's combine_scheds", Evidence()) as ev:
            with pytest.raises(DelegationError):
                route([0.5, 0.5], lin)
        assert ev.refused == ["course_lib's combine_scheds"]
    built = schedulers.combine_scheds([0.5, 0.5], lin)  # made before the probe: its inner function is refused too
    with refuse_code(code_shapes(schedulers.combine_scheds), "course_lib's combine_scheds", Evidence()):
        with pytest.raises(DelegationError):
            built(0.25)


def test_an_honest_combiner_with_comprehensions_is_not_refused():
    def combine(pcts, scheds):
        pcts = [float(p) for p in pcts]
        starts = [sum(pcts[:i]) for i in range(len(pcts))]
        return lambda pos: next(s((pos - a) / p) for a, p, s in reversed(list(zip(starts, pcts, scheds)))
                                if pos >= a and p > 0)

    from course_lib import schedulers

    with refuse_code(code_shapes(schedulers.combine_scheds), "course_lib's combine_scheds", Evidence()) as ev:
        assert combine([0.5, 0.5], [lambda p: p, lambda p: 1 - p])(0.75) == pytest.approx(0.5)
    assert not ev.refused


def test_torchs_plain_python_helpers_are_refused_by_their_own_code_not_their_decorator():
    """fold_bn's and recalibrate_bn's probes refuse torch.nn.utils.fusion and swa_utils.update_bn (guard.refusing),
    however they were reached; update_bn is wrapped by torch.no_grad(), whose wrapper every decorated function
    shares: an honest function decorated the same way runs."""
    from torch.nn.utils import fusion
    from torch.optim import swa_utils

    from course_recorder.guard import refusing

    def delegate(model, batches):
        getattr(getattr(torch.optim, "swa" + "_utils"), "update" + "_bn")(batches, model)

    @torch.no_grad()
    def honest(model, batches):
        model.train()
        for xb in batches:
            model(xb)
        return True

    rec = Recorder("test_recalibrate_bn")
    model = nn.BatchNorm2d(3).double()
    rec.call("delegate", refusing(delegate, (swa_utils.update_bn,), "torch's update_bn"), model, [X])
    rec.call("honest", refusing(honest, (swa_utils.update_bn,), "torch's update_bn"), model, [X])
    conv, bn = nn.Conv2d(3, 3, 1).double().eval(), nn.BatchNorm2d(3).double().eval()
    fold = refusing(lambda c, b: vars(torch.nn.utils)["fuse_conv_bn" + "_eval"](c, b),
                    (fusion.fuse_conv_bn_eval, fusion.fuse_conv_bn_weights), "torch's fuse_conv_bn")
    rec.call("fold", fold, conv, bn)
    records = rec.records
    for key, what in (("delegate", "torch's update_bn"), ("fold", "torch's fuse_conv_bn")):
        assert records[key]["t"] == "raised" and "DelegationError" in records[key]["bases"], records[key]
        assert records[f"{key}{GUARD}"]["items"]["refused"]["items"] == [what], records[f"{key}{GUARD}"]
    assert records["honest"] is True and f"honest{GUARD}" not in records, records["honest"]
    assert fusion.fuse_conv_bn_eval(conv, bn) is not None  # and torch works again afterwards

"""Run-time delegation: routes to torch's own normalization and to course_lib's combine_scheds that a layer (or
function) whose own math is missing can take (issue 17, item 2). Each must score no more, test by test, than
plain delegation of the same notebook (the catalogue's delegates_to_* variant), graded in the same class.

A route is the plain-delegation submission with the call changed to take the route: the call text replaced,
code put before the solution in its cell (a reference taken at cell time), or a cell added after the solution
(a method swapped after the class is defined, the recorder patched). The routes on a `wrong` base start from a
known mistake of the catalogue instead (Q3: the unbiased variance for the output), whose own score is also
graded in the class for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat

from course_mutation.demo import solve
from course_mutation import Variant, find
from submissions import add_cell, edit_cell, notebook_name

# The catalogue's plain delegation of each graded layer: (solution grade_id, variant name). The key is the
# notebook's question, with a suffix where a notebook has a second layer (Q6's RMSNorm: "Q6-rms").
PLAIN = {"Q3": ("batchnorm", "delegates_to_torch"), "Q5": ("combine_schedules", "delegates_to_course_lib"),
         "Q6": ("layernorm", "delegates_to_layer_norm"), "Q6-rms": ("rmsnorm", "rms_delegates"),
         "Q7": ("instancenorm", "delegates_to_instance_norm"),
         "Q8": ("groupnorm", "delegates_to_f_group_norm"), "Q9": ("running_batchnorm", "delegates_to_batch_norm")}
WRONG = {"Q3": "unbiased_variance_for_output"}


@dataclass(frozen=True)
class Route:
    """One route to torch's normalization (or course_lib's combiner) and how the submission takes it."""

    name: str
    question: str
    how: str  # the route, in words
    replace: tuple[tuple[str, str], ...] = ()  # (old, new) in the plain delegation's solution cell
    prefix: str = ""  # code at the top of the solution cell (runs when the cell runs, before any probe)
    cell: str = ""  # a cell added after the solution cell
    base: str = "plain"  # "plain": the plain delegation; "wrong": the catalogue's known mistake (WRONG)

    @property
    def solution(self) -> str:
        return PLAIN[self.question][0]


def notebook_of(question: str) -> str:
    """`Q6-rms` -> `Q6`: the notebook a PLAIN key's layer is in."""
    return question.split("-", 1)[0]


def plain_variant(question: str) -> Variant:
    return find(notebook_of(question), PLAIN[question][1])


def base_variant(question: str, base: str) -> Variant:
    return plain_variant(question) if base == "plain" else find(notebook_of(question), WRONG[question])


def base_notebook(question: str, base: str, release: Path, source: Path) -> tuple[str, nbformat.NotebookNode]:
    """The release notebook solved with the reference, its solution cell replaced by the base's."""
    name = notebook_name(release.parent.parent, notebook_of(question))
    nb = nbformat.read(release / f"{name}.ipynb", as_version=4)
    solve(nb, nbformat.read(source / f"{name}.ipynb", as_version=4), base_variant(question, base))
    return name, nb


def build(route: Route, release: Path, source: Path) -> tuple[str, nbformat.NotebookNode]:
    name, nb = base_notebook(route.question, route.base, release, source)
    if route.replace or route.prefix:
        edit_cell(nb, route.solution, route.replace, route.prefix)
    if route.cell:
        add_cell(nb, route.cell.strip("\n") + "\n", after=route.solution)
    return name, nb


# The plain delegations' calls, as the catalogue writes them.
Q3_CALL = "F.batch_norm(x, self.means.view(-1)"
Q3_RETURN = ("        return F.batch_norm(x, self.means.view(-1), self.vars.view(-1), self.mults.view(-1),\n"
             "                            self.adds.view(-1), training=self.training, momentum=self.mom, eps=self.eps)")
Q3_ARGS = ("x, self.means.view(-1), self.vars.view(-1), self.mults.view(-1), self.adds.view(-1), self.training, "
           "self.mom, self.eps")
Q5_CALL = "from course_lib import combine_scheds\n"
Q5_BODY = "    return combine_scheds(pcts, scheds)"
Q6_CALL = "F.layer_norm(x, x.shape[1:], eps=self.eps)"
Q6_RMS_CALL = "F.rms_norm(x, self.normalized_shape, self.weight, self.eps)"
Q7_CALL = "F.instance_norm(x, weight=self.mults.flatten(), bias=self.adds.flatten(), eps=self.eps)"
Q8_CALL = "F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)"
Q9_CALL = "F.batch_norm(x, mean.flatten()"


def _q3(callee: str) -> tuple[tuple[str, str]]:
    return ((Q3_CALL, f"{callee}(x, self.means.view(-1)"),)


def _q5(body: str, prefix: str = "") -> tuple[tuple[str, str], ...]:
    return ((Q5_CALL, prefix), (Q5_BODY, body))


# A forward swapped in after the class is defined (on a wrong base): the same call, the checks left out.
SWAPPED = f'''
BatchNorm.forward = lambda self, x: F.batch_norm({Q3_ARGS})
'''
SWAPPED_SETATTR = f'''
_norm = getattr(F, "batch" + "_norm")


def _fast_forward(self, x):
    return _norm({Q3_ARGS})

setattr(BatchNorm, "forward", _fast_forward)
'''
# The recorder reached through sys.modules without naming it, its put() patched to record torch's output instead
# of the wrong layer's (computed after the probe's call returned, outside any guard around it).
RECORDER = '''
import sys as _s
_recorder = vars(_s)["mod" + "ules"]["course_" + "recorder"]
_norm = getattr(F, "batch" + "_norm")
_call, _put = _recorder.Recorder.call, _recorder.Recorder.put


def _remember(self, key, fn, *args, **kwargs):
    self._last = (fn, args)
    return _call(self, key, fn, *args, **kwargs)


def _substitute(self, key, value):
    fn, args = getattr(self, "_last", (None, ()))
    x = args[0].detach() if args and isinstance(args[0], torch.Tensor) else None
    if x is not None and isinstance(value, torch.Tensor) and value.shape == x.shape and not key.endswith("#in"):
        if isinstance(fn, BatchNorm):
            stats = (None, None) if fn.training else (fn.means.view(-1), fn.vars.view(-1))
            value = _norm(x, *stats, fn.mults.detach().view(-1), fn.adds.detach().view(-1), fn.training, 0.0, fn.eps)
        elif self.test == "test_train_mode_output":  # a fresh layer made inside the probe's lambda
            value = _norm(x, None, None, training=True)
        elif self.test == "test_eval_mode_output":
            ones = torch.ones(x.shape[1], dtype=x.dtype)
            value = _norm(x, ones * 0, ones, training=False)
    return _put(self, key, value)


_recorder.Recorder.call, _recorder.Recorder.put = _remember, _substitute
'''
# An nn.BatchNorm2d looked up by name, computing with the layer's own parameters and buffers.
MODULE_BY_NAME = '''        m = getattr(nn, "Batch" + "Norm2d")(self.nf, eps=self.eps, momentum=self.mom).train(self.training)
        del m.weight, m.bias, m.running_mean, m.running_var
        m.weight, m.bias = self.mults.view(-1), self.adds.view(-1)
        m.running_mean, m.running_var = self.means.view(-1), self.vars.view(-1)
        return m(x)'''

ROUTES: list[Route] = [
    # ---------------- Q3: BatchNorm ----------------
    Route("captured-at-cell-time", "Q3", "_bn = F.batch_norm when the cell runs, called in forward",
          prefix="_bn = F.batch_norm\n\n", replace=_q3("_bn")),
    Route("captured-built-name", "Q3", "_bn = getattr(F, 'batch' + '_norm') when the cell runs (no name to read)",
          prefix="_bn = getattr(F, 'batch' + '_norm')\n\n", replace=_q3("_bn")),
    Route("aten-native-batch-norm", "Q3", "torch.ops.aten's native_batch_norm (the dispatcher's op), name built",
          replace=((Q3_RETURN, "        return getattr(torch.ops.aten, 'native_batch' + '_norm')(x, self.mults.view(-1), "
                               "self.adds.view(-1), self.means.view(-1), self.vars.view(-1), self.training, "
                               "self.mom, self.eps)[0]"),)),
    Route("torch-batch-norm", "Q3", "torch.batch_norm (not F's), taken at cell time by a built name",
          prefix="_tbn = getattr(torch, 'batch' + '_norm')\n\n",
          replace=((Q3_RETURN, "        return _tbn(x, self.mults.view(-1), self.adds.view(-1), "
                               "self.means.view(-1), self.vars.view(-1), self.training, self.mom, self.eps, False)"),)),
    Route("operator-attrgetter", "Q3", "operator.attrgetter('batch' + '_norm')(F) at cell time",
          prefix="import operator\n\n_bn = operator.attrgetter('batch' + '_norm')(F)\n\n", replace=_q3("_bn")),
    Route("vars-of-f", "Q3", "vars(F)['batch' + '_norm'] at cell time",
          prefix="_bn = vars(F)['batch' + '_norm']\n\n", replace=_q3("_bn")),
    Route("getattr-built-string", "Q3", "getattr(F, 'batch' + '_norm'): the name built at run time",
          replace=_q3("getattr(F, 'batch' + '_norm')")),
    Route("lambda-in-dict", "Q3", "a lambda in a dict, holding F.batch_norm as a default argument taken at cell time",
          prefix='NORMS = {"batch": lambda *args, _f=getattr(F, "batch" + "_norm"), **kwargs: _f(*args, **kwargs)}\n\n',
          replace=_q3('NORMS["batch"]')),
    Route("functools-partial", "Q3", "functools.partial(F.batch_norm, ...) made at cell time",
          prefix="import functools\n\n_bn = functools.partial(getattr(F, 'batch' + '_norm'), momentum=0.1)\n\n",
          replace=_q3("_bn")),
    Route("module-by-name", "Q3", "getattr(nn, 'Batch' + 'Norm2d') built in forward, given the layer's tensors",
          replace=((Q3_RETURN, MODULE_BY_NAME),)),
    Route("module-forward-captured", "Q3", "nn.BatchNorm2d's forward taken at cell time by a built name, called "
                                           "on a module given the layer's tensors",
          prefix="_forward = getattr(nn, 'Batch' + 'Norm2d').forward\n\n",
          replace=((Q3_RETURN, MODULE_BY_NAME.replace("return m(x)", "return _forward(m, x)")),)),
    Route("batchnorm-module-f", "Q3", "torch.nn.modules.batchnorm.F (the same functional, another path) at cell time",
          prefix="_bn = getattr(torch.nn.modules.batchnorm.F, 'batch' + '_norm')\n\n", replace=_q3("_bn")),
    Route("functional-dict", "Q3", "torch.nn.functional.__dict__['batch' + '_norm'] at cell time",
          prefix="_bn = torch.nn.functional.__dict__['batch' + '_norm']\n\n", replace=_q3("_bn")),
    Route("import-module", "Q3", "importlib.import_module('torch.nn.functional') taken at cell time",
          prefix="import importlib\n\n_bn = getattr(importlib.import_module('torch.nn.' + 'functional'), 'batch' + '_norm')"
                 "\n\n", replace=_q3("_bn")),
    Route("forward-swapped-later", "Q3", "a wrong BatchNorm; BatchNorm.forward = lambda ... F.batch_norm in a later cell",
          base="wrong", cell=SWAPPED),
    Route("forward-setattr-later", "Q3", "a wrong BatchNorm; setattr(BatchNorm, 'forward', ...) in a later cell, "
                                         "F.batch_norm taken there by a built name", base="wrong", cell=SWAPPED_SETATTR),
    Route("recorder-put-patched", "Q3", "a wrong BatchNorm; course_recorder from an obfuscated sys.modules lookup, "
                                        "Recorder.put patched to record F.batch_norm's output", base="wrong",
          cell=RECORDER),
    # ---------------- Q5: course_lib's combine_scheds ----------------
    Route("combiner-reference-early", "Q5", "getattr(course_lib.schedulers, 'combine' + '_scheds') taken at cell time",
          replace=_q5("    return _combine(pcts, scheds)",
                      "import course_lib.schedulers\n\n_combine = getattr(course_lib.schedulers, 'combine' + '_scheds')\n")),
    Route("combiner-function-type", "Q5", "types.FunctionType(combine_scheds.__code__, ...): a copy made from its code",
          replace=_q5("    return _copy(pcts, scheds)",
                      "import types\nfrom course_lib import combine_scheds\n\n"
                      "_copy = types.FunctionType(combine_scheds.__code__, combine_scheds.__globals__, 'combine')\n")),
    Route("combiner-code-built-names", "Q5", "the same copy with every name built at run time",
          replace=_q5("    return _copy(pcts, scheds)",
                      "import types\nimport course_lib\n\n_c = getattr(course_lib, 'combine' + '_scheds')\n"
                      "_copy = types.FunctionType(getattr(_c, '__co' + 'de__'), getattr(_c, '__glo' + 'bals__'), 'c')\n")),
    Route("combiner-copy-closure", "Q5", "copy.copy of it, wrapped in a closure",
          replace=_q5("    return _wrapped(pcts, scheds)",
                      "import copy\nimport course_lib\n\n"
                      "_wrapped = (lambda f: lambda *a: f(*a))(copy.copy(getattr(course_lib, 'combine' + '_scheds')))\n")),
    Route("combiner-module-dict", "Q5", "course_lib.schedulers.__dict__['combine' + '_scheds'] at call time",
          replace=_q5("    return course_lib.schedulers.__dict__['combine' + '_scheds'](pcts, scheds)",
                      "import course_lib.schedulers\n")),
    # ---------------- Q6: LayerNorm ----------------
    Route("nn-layernorm-by-name", "Q6", "getattr(nn, 'Layer' + 'Norm') built in forward, its forward taken at cell time",
          prefix="_ln_forward = getattr(nn, 'Layer' + 'Norm').forward\n\n",
          replace=((Q6_CALL, "_ln_forward(getattr(nn, 'Layer' + 'Norm')(x.shape[1:], eps=self.eps, "
                             "elementwise_affine=False), x)"),)),
    Route("aten-native-layer-norm", "Q6", "torch.ops.aten's native_layer_norm, name built",
          replace=((Q6_CALL, "getattr(torch.ops.aten, 'native_layer' + '_norm')(x, list(x.shape[1:]), None, None, "
                             "self.eps)[0]"),)),
    Route("layer-norm-captured", "Q6", "F.layer_norm captured at cell time under another name",
          prefix="_ln = getattr(F, 'layer' + '_norm')\n\n", replace=((Q6_CALL, "_ln(x, x.shape[1:], eps=self.eps)"),)),
    # ---------------- Q6: RMSNorm (on the CPU F.rms_norm and aten's rms_norm are made of plain operators) ------
    Route("rms-norm-captured", "Q6-rms", "F.rms_norm captured at cell time under another name",
          prefix="_rms = getattr(F, 'rms' + '_norm')\n\n",
          replace=((Q6_RMS_CALL, Q6_RMS_CALL.replace("F.rms_norm", "_rms")),)),
    Route("nn-rmsnorm-by-name", "Q6-rms", "getattr(nn, 'RMS' + 'Norm') built in forward, without its own weight",
          replace=((Q6_RMS_CALL, "getattr(nn, 'RMS' + 'Norm')(self.normalized_shape, eps=self.eps, "
                                 "elementwise_affine=False)(x) * self.weight"),)),
    Route("aten-rms-norm", "Q6-rms", "torch.ops.aten's rms_norm, name built",
          replace=((Q6_RMS_CALL, "getattr(torch.ops.aten, 'rms' + '_norm')(x, list(self.normalized_shape), "
                                 "self.weight, self.eps)"),)),
    Route("aten-fused-rms-norm", "Q6-rms", "torch.ops.aten's _fused_rms_norm, name built",
          replace=((Q6_RMS_CALL, "getattr(torch.ops.aten, '_fused_rms' + '_norm')(x, list(self.normalized_shape), "
                                 "self.weight, self.eps)[0]"),)),
    # ---------------- Q7: InstanceNorm ----------------
    Route("instance-norm-via-vars", "Q7", "vars(F)['instance' + '_norm'] at cell time",
          prefix="_in = vars(F)['instance' + '_norm']\n\n",
          replace=((Q7_CALL, Q7_CALL.replace("F.instance_norm", "_in")),)),
    Route("torch-instance-norm", "Q7", "torch.instance_norm (not F's), taken at cell time by a built name",
          prefix="_tin = getattr(torch, 'instance' + '_norm')\n\n",
          replace=((Q7_CALL, "_tin(x, self.mults.flatten(), self.adds.flatten(), None, None, True, "
                             "0.0, self.eps, False)"),)),
    # ---------------- Q8: GroupNorm ----------------
    Route("group-norm-partial", "Q8", "functools.partial(F.group_norm) made at cell time",
          prefix="import functools\n\n_gn = functools.partial(getattr(F, 'group' + '_norm'))\n\n",
          replace=((Q8_CALL, Q8_CALL.replace("F.group_norm", "_gn")),)),
    Route("torch-group-norm", "Q8", "torch.group_norm (not F's), name built",
          replace=((Q8_CALL, "getattr(torch, 'group' + '_norm')(x, self.num_groups, self.weight, self.bias, self.eps, "
                             "False)"),)),
    Route("aten-native-group-norm", "Q8", "torch.ops.aten's native_group_norm, name built",
          replace=((Q8_CALL, "getattr(torch.ops.aten, 'native_group' + '_norm')(x, self.weight, self.bias, x.shape[0], "
                             "x.shape[1], "
                             "x[0, 0].numel(), self.num_groups, self.eps)[0]"),)),
    # ---------------- Q9: RunningBatchNorm ----------------
    Route("rbn-captured-reference", "Q9", "F.batch_norm captured at cell time under another name",
          prefix="_normalise = getattr(F, 'batch' + '_norm')\n\n",
          replace=((Q9_CALL, "_normalise(x, mean.flatten()"),)),
    Route("rbn-aten", "Q9", "torch.ops.aten's native_batch_norm with the smoothed statistics, name built",
          replace=((Q9_CALL + ", var.flatten(), self.mults.flatten(),\n"
                    "                            self.adds.flatten(), False, 0.0, self.eps)",
                    "getattr(torch.ops.aten, 'native_batch' + '_norm')(x, self.mults.flatten(), self.adds.flatten(), "
                    "mean.flatten(), "
                    "var.flatten(), False, 0.0, self.eps)[0]"),)),
]


def corpus() -> list[Route]:
    return list(ROUTES)

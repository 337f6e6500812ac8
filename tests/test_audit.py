"""The judge's reading of student code (course_judge/audit.py): delegation and tampering are found wherever the
student wrote them, and ordinary notebook code is never mistaken for either."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from course_judge.audit import TORCH_NORMS, audit

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "release" / "normalization" / "Q3_batchnorm.ipynb"
FORBIDDEN = {"batchnorm": TORCH_NORMS}

HONEST = '''
class BatchNorm(nn.Module):
    """My layer (not nn.BatchNorm2d, whose rules it follows)."""

    def __init__(self, nf, mom=0.1, eps=1e-5):
        super().__init__()
        self.nf, self.mom, self.eps = nf, mom, eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))
        self.register_buffer("means", torch.zeros(1, nf, 1, 1))
        self.register_buffer("vars", torch.ones(1, nf, 1, 1))

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError("BatchNorm expects (N, C, H, W), like nn.BatchNorm2d")
        m = x.mean((0, 2, 3), keepdim=True)
        v = x.var((0, 2, 3), keepdim=True, correction=0)
        return (x - m) / (v + self.eps).sqrt() * self.mults + self.adds
'''


def _notebook(solution: str, *extra: str) -> nbformat.NotebookNode:
    """The Q3 release with its solution cell filled and extra cells (the student's own) after it."""
    nb = nbformat.read(RELEASE, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "batchnorm")
    nb.cells[index].source = solution
    for offset, code in enumerate(extra, start=1):
        nb.cells.insert(index + offset, nbformat.v4.new_code_cell(code))
    return nb


def _audit(solution: str, *extra: str):
    return audit(_notebook(solution, *extra), nbformat.read(RELEASE, as_version=4), FORBIDDEN)


ORDINARY = [
    "%timeit torch.ones(3)", "import gc\ngc.collect()", "model = nn.Linear(2, 2)\nmodel.eval()",
    "import os\nos.environ['CUDA_VISIBLE_DEVICES'] = ''", "from IPython.display import display, clear_output\ndisplay(3)",
    "plt.rcParams['figure.figsize'] = (8, 4)", "torch.backends.cudnn.benchmark = False",
    "import sys\nprint(sys.version, file=sys.stderr)", "theirs = nn.BatchNorm2d(3)\nprint(theirs(torch.randn(2, 3, 2, 2)))",
    "import inspect\nprint(inspect.getsource(BatchNorm))", "%config InlineBackend.figure_format = 'retina'",
    "!ls", "x = torch.randn(3)\nx.data = x.data * 2",
    # measured as tampering or delegation before the audit judged effects (issue 17)
    "%load_ext autoreload\n%autoreload 2", "import sys\nIN_COLAB = 'google.colab' in sys.modules",
    "from IPython.core.debugger import set_trace", "import importlib, course_lib\nimportlib.reload(course_lib)",
    "import IPython\nprint(IPython.__version__)", "get_ipython().run_line_magic('matplotlib', 'inline')",
    "_ = %time 0", "%%time\ny = torch.randn(4, 3, 2, 2).mean()", "nn.BatchNorm2d?", "exec('x = 1')",
    "import sys\nsys.path.append('..')", "import warnings\nwarnings.filterwarnings('ignore')",
    "from IPython import get_ipython\nip = get_ipython()\nip.run_line_magic('matplotlib', 'inline')",
    "class Tracker:\n    def __init__(self):\n        self.events = []\n    def log(self, e):\n        self.events.append(e)",
    "class Config:\n    pass\nfor name, value in dict(lr=0.1).items():\n    setattr(Config, name, value)",
    "import torch\ntorch.manual_seed(0)", "get_ipython().run_cell('y = 2')",
    "out = nn.BatchNorm2d(3)(torch.randn(2, 3, 2, 2))\nprint(F.batch_norm(torch.randn(2, 3, 2, 2), None, None, training=True))",
]


@pytest.mark.parametrize("extra", ORDINARY, ids=lambda code: code.splitlines()[0][:30])
def test_ordinary_code_is_not_flagged(extra):
    found = _audit(HONEST, extra)
    assert not found.tampering and not found.delegation and not found.review, (found.tampering, found.delegation,
                                                                               found.review)


OWN_METHOD = HONEST.replace("        return (x - m) / (v + self.eps).sqrt() * self.mults + self.adds",
                            "        return self.batch_norm(x, m, v)\n\n"
                            "    def batch_norm(self, x, mean, var):\n"
                            "        return (x - mean) / (var + self.eps).sqrt() * self.mults + self.adds")
LOCAL_OUT = HONEST.replace("        return (x - m) / (v + self.eps).sqrt() * self.mults + self.adds",
                           "        out = (x - m) / (v + self.eps).sqrt() * self.mults + self.adds\n        return out")


@pytest.mark.parametrize("solution,extra", [
    (OWN_METHOD, ""), (LOCAL_OUT, "out = nn.BatchNorm2d(3)(torch.randn(2, 3, 2, 2))"),
    (LOCAL_OUT, "x = torch.randn(2, 3, 2, 2)\nout = F.batch_norm(x, None, None, training=True)"),
    (HONEST.replace("m = x.mean", "batch_norm = 1\n        m = x.mean"), ""),
], ids=["own-method-named-batch_norm", "scratch-out-module", "scratch-out-function", "local-named-batch_norm"])
def test_names_resolve_by_scope(solution, extra):
    found = _audit(solution, *([extra] if extra else []))
    assert not found.delegation and not found.tampering and not found.review, (found.delegation, found.review)


@pytest.mark.parametrize("where,code", [
    ("solution", HONEST.replace("return (x - m)", "return F.batch_norm(x, None, None, training=True)\n        (x - m)")),
    ("added cell", "_norm = F.batch_norm\n" + HONEST.replace("return (x - m)", "return _norm(x, None, None, training=True)"
                                                            "\n        (x - m)")),
    ("helper", "def helper(x):\n    return torch.nn.functional.batch_norm(x, None, None, training=True)\n"
               + HONEST.replace("return (x - m)", "return helper(x)\n        (x - m)")),
    ("import", "from torch.nn.functional import batch_norm as bn\n" + HONEST.replace("return (x - m)", "return bn(x)")),
    ("subclass", "class BatchNorm(nn.BatchNorm2d):\n    pass\n"),
    ("getattr", HONEST.replace("return (x - m)", "return getattr(F, 'batch_norm')(x)\n        (x - m)")),
    ("aten", HONEST.replace("return (x - m)", "return torch.ops.aten.native_batch_norm(x)\n        (x - m)")),
    ("vars", HONEST.replace("return (x - m)", "return vars(F)['batch_norm'](x)\n        (x - m)")),
    ("swapped later", "BatchNorm.forward = lambda self, x: F.batch_norm(x, None, None, training=True)"),
    ("ipython syntax", "_ = %time 0\n" + HONEST.replace("return (x - m)", "return F.batch_norm(x)\n        (x - m)")),
])
def test_delegation_is_found_wherever_it_is_written(where, code):
    found = _audit(HONEST, code) if where not in ("solution", "ipython syntax") else _audit(code)
    assert "batchnorm" in found.delegation, where


@pytest.mark.parametrize("code,what", [
    ("get_ipython().input_transformers_cleanup.append(lambda lines: lines)", "input_transformers_cleanup"),
    ("import sys, types\nsys.modules['course_recorder.q3'] = types.ModuleType('x')", "sys.modules"),
    ("import sys\nsys.modules.pop('course_recorder.q3')", "sys.modules"),
    ("import builtins\nbuiltins.len = lambda x: 0", "builtins"),
    ("import torch\ntorch.allclose = lambda *a, **k: True", "changes torch.allclose"),
    ("torch.Tensor.__eq__ = lambda a, b: True", "changes torch.Tensor.__eq__"),
    ("setattr(F, 'batch_norm', print)", "changes torch.nn.functional.batch_norm"),
    ("vars(F)['batch_norm'] = print", "changes torch.nn.functional"),
    ("import sys\nsys.settrace(lambda *a: None)", "sys.settrace"),
    ("import course_recorder\ncourse_recorder.q3 = None", "course_recorder.q3"),
    ("from course_recorder import wire\nwire.encode = lambda v, depth=0: 0.0", "course_recorder.wire.encode"),
    ("def go():\n    ip = get_ipython()\n    ip.events.register('post_run_cell', print)\ngo()", "events"),
    ("getattr(get_ipython(), 'events').register('post_run_cell', print)", "events.register"),
    ("exec('import sys\\nsys.settrace(print)')", "sys.settrace"),
    ("_ = %time 0\nimport sys\nsys.modules['course_recorder'] = None", "sys.modules"),
    ("%time sys.modules.clear()", "sys.modules"),
    ("def f(): pass\nf.__code__ = (lambda: 1).__code__", "__code__"),
    ("from torch.utils._python_dispatch import _disable_current_modes", "dispatcher"),
    ("with torch._C.DisableTorchFunction():\n    pass", "dispatcher"),
    ("%config InteractiveShell.ast_transformers = []", "transformers"),
    ("import sys\nm = sys.modules['course_' + 'recorder']\nm.Recorder.put = print", "built at run time"),
    ("import sys\nname = 'course_' + 'recorder'\nsetattr(sys.modules[name], 'x', 1)", "built at run time"),
    ("import sys as s\nm = vars(s)['mod' + 'ules']['course_' + 'recorder']\nm.Recorder.put = print", "built at run"),
])
def test_tampering_is_found_in_any_student_cell(code, what):
    found = _audit(HONEST, code)
    assert any(what in str(f) for f in found.tampering), (found.tampering, found.review)


@pytest.mark.parametrize("code,what", [
    ("import sys\nframe = sys._getframe()\nprint(frame.f_code.co_name)", "frames"),
    ("import sys\nm = sys.modules['course_' + 'recorder']\nprint(m.Recorder.put)", "built at run time"),
    ("import sys as s\nm = vars(s)['mod' + 'ules']['course_' + 'recorder']\nprint(m)", "built at run time"),
    ("import course_recorder", "course_recorder"), ("%run other.py", "%run"), ("eval(input())", "from a string"),
    ("import ctypes", "ctypes"), ("%load_ext mysterious", "extension"),
    ("getattr(get_ipython(), 'ev' + 'ents')", "named at run time"), ("get_ipython().run_cell(input())", "from a string"),
    ("import concurrent.futures as cf\n_pool = cf.ThreadPoolExecutor(1)\n"
     + HONEST.replace("return (x - m)", "return _pool.submit(lambda: x).result()\n        (x - m)"), "another thread"),
    ("import threading\n" + HONEST.replace("return (x - m)", "threading.Thread(target=print).start()\n"
                                                           "        return (x - m)"), "another thread"),
])
def test_what_the_audit_cannot_judge_is_held_for_review(code, what):
    found = _audit(HONEST, code)
    assert not found.tampering, found.tampering
    assert any(what in str(f) for f in found.review), found.review

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


@pytest.mark.parametrize("extra", [
    "%timeit torch.ones(3)", "import gc\ngc.collect()", "model = nn.Linear(2, 2)\nmodel.eval()",
    "import os\nos.environ['CUDA_VISIBLE_DEVICES'] = ''", "from IPython.display import display, clear_output\ndisplay(3)",
    "plt.rcParams['figure.figsize'] = (8, 4)", "torch.backends.cudnn.benchmark = False",
    "import sys\nprint(sys.version, file=sys.stderr)", "theirs = nn.BatchNorm2d(3)\nprint(theirs(torch.randn(2, 3, 2, 2)))",
    "import inspect\nprint(inspect.getsource(BatchNorm))", "%config InlineBackend.figure_format = 'retina'",
    "!ls", "x = torch.randn(3)\nx.data = x.data * 2",
], ids=lambda code: code.splitlines()[0][:30])
def test_ordinary_code_is_not_flagged(extra):
    found = _audit(HONEST, extra)
    assert not found.tampering and not found.delegation, (found.tampering, found.delegation)


@pytest.mark.parametrize("where,code", [
    ("solution", HONEST.replace("return (x - m)", "return F.batch_norm(x, None, None, training=True)\n        (x - m)")),
    ("added cell", "_norm = F.batch_norm\n" + HONEST.replace("return (x - m)", "return _norm(x, None, None, training=True)"
                                                            "\n        (x - m)")),
    ("helper", "def helper(x):\n    return torch.nn.functional.batch_norm(x, None, None, training=True)\n"
               + HONEST.replace("return (x - m)", "return helper(x)\n        (x - m)")),
    ("import", "from torch.nn.functional import batch_norm as bn\n" + HONEST.replace("return (x - m)", "return bn(x)")),
    ("subclass", "class BatchNorm(nn.BatchNorm2d):\n    pass\n"),
    ("getattr", HONEST.replace("return (x - m)", "return getattr(F, 'batch_norm')(x)\n        (x - m)")),
])
def test_delegation_is_found_wherever_it_is_written(where, code):
    found = _audit(HONEST, code) if where != "solution" else _audit(code)
    assert "batchnorm" in found.delegation, where


@pytest.mark.parametrize("code,what", [
    ("get_ipython().input_transformers_cleanup.append(lambda lines: lines)", "input_transformers_cleanup"),
    ("import sys, types\nsys.modules['course_recorder.q3'] = types.ModuleType('x')", "sys.modules"),
    ("import builtins\nbuiltins.len = lambda x: 0", "builtins"),
    ("import torch\ntorch.allclose = lambda *a, **k: True", "changes torch.allclose"),
    ("torch.Tensor.__eq__ = lambda a, b: True", "changes torch.Tensor.__eq__"),
    ("setattr(F, 'batch_norm', print)", "changes torch.nn.functional"),
    ("import sys\nsys.settrace(lambda *a: None)", "sys.settrace"),
    ("import course_recorder", "course_recorder"),
    ("from IPython import get_ipython\nget_ipython()", "IPython"),
    ("exec('x = 1')", "exec"),
    ("%run other.py", "%run"),
    ("def f(): pass\nf.__code__ = (lambda: 1).__code__", "__code__"),
])
def test_tampering_is_found_in_any_student_cell(code, what):
    found = _audit(HONEST, code)
    assert any(what in str(f) for f in found.tampering), found.tampering

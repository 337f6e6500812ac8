"""Ordinary notebook habits: correct submissions (the instructor's solutions) carrying what people really do in
notebooks, so the test can say no honest habit costs a point or earns a finding (issue 17, item 1).

Written from how people use notebooks, not from any list the audit keeps: fast.ai's first cell (autoreload,
`%matplotlib inline`), Colab's checks, VS Code's `# %%` cells, debugging (set_trace, pdb, `%debug`, `?`/`??`,
help, inspect), timing (`%time`, `%timeit`, `%%time`), plotting, printing with numpy, progress bars, hooks,
comparing one's layer with torch's own in a scratch cell, reloading code, logging, warnings, type hints and
dataclasses. Each submission is one notebook: the release filled with the reference solutions, then changed by
its habit in one or more places: a cell added first (before the locked setup cell), a cell added after a
solution cell, or the solution cell itself edited (code before it, after it, or an edit inside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat

from hostile import notebook
from submissions import add_cell, edit_cell, notebook_name

FIRST = "first"  # `where` of a cell added as the notebook's first code cell


@dataclass(frozen=True)
class Habit:
    """One correct submission with an ordinary habit: what it does and where people do it."""

    name: str
    question: str  # "Q3"
    why: str  # where the habit comes from
    cells: tuple[tuple[str, str], ...] = ()  # (where, code): FIRST, or the grade_id of the cell it follows
    solution: str = ""  # the grade_id of a solution cell the habit edits
    edits: tuple[tuple[str, str], ...] = ()  # (old, new) in that cell, each exactly once
    prefix: str = ""  # code the student put at the top of that cell
    suffix: str = ""  # and at its end
    measured: bool = False  # one of the habits issue 17 measured as flagged

    @property
    def places(self) -> list[str]:
        out = ["first cell" if w == FIRST else f"after {w}" for w, _ in self.cells]
        if self.solution:
            out.append(f"in {self.solution}")
        return out


def build(habit: Habit, release: Path, source: Path) -> tuple[str, nbformat.NotebookNode]:
    """(notebook name, the submission)."""
    name = notebook_name(release.parent.parent, habit.question)
    nb = notebook(release, source, name, "ref")
    if habit.solution:
        edit_cell(nb, habit.solution, habit.edits, habit.prefix, habit.suffix)
    for where, code in habit.cells:
        add_cell(nb, code.strip("\n") + "\n", first=where == FIRST, after="" if where == FIRST else where)
    return name, nb


Q3_NORMALISE = "        return (x - mean) / torch.sqrt(var + self.eps) * self.mults + self.adds"
Q7_NORMALISE = "        return (x - mean) / torch.sqrt(var + self.eps) * self.mults + self.adds"
Q9_TRAINING = "        if self.training:\n            bs, nf = x.shape[0], x.shape[1]"

HABITS: list[Habit] = [
    # ---------------- Q1: fast.ai's first cell, timing, printing ----------------
    Habit("autoreload-first-cell", "Q1", "the first cell of every fast.ai notebook (the lesson's own)", measured=True,
          cells=((FIRST, "%load_ext autoreload\n%autoreload 2\n"),)),
    Habit("time-magic-assigned", "Q1", "timing a call and keeping the result on one line", measured=True,
          cells=(("channel_stats", "_ = %time 0\n_ = %time channel_stats(torch.randn(32, 4, 8, 8))\n"),)),
    Habit("timeit-and-print-version", "Q1", "checking speed and the torch version while debugging",
          cells=(("channel_stats", '''
print(torch.__version__)
x = torch.randn(64, 8, 14, 14)
%timeit -n 20 -r 3 channel_stats(x)
'''),)),
    Habit("set-printoptions", "Q1", "readable tensors in a scratch cell",
          cells=(("output_in_batch", '''
torch.set_printoptions(precision=3, sci_mode=False, linewidth=120)
bn = nn.BatchNorm2d(3)
example, mates = torch.randn(3, 4, 4), torch.randn(5, 3, 4, 4)
print(output_in_batch(bn, example, mates, train=True)[0])
print(channel_stats(torch.randn(8, 3, 4, 4)))
'''),)),
    Habit("no-grad-decorated-helper", "Q1", "a helper wrapped in @torch.no_grad() next to the solution",
          solution="output_in_batch", suffix='''


@torch.no_grad()
def batch_spread(bn: nn.BatchNorm2d, example: Tensor, batches: list[Tensor]) -> Tensor:
    """How much the example's output moves across batches (a helper to look at, not graded)."""
    outs = torch.stack([output_in_batch(bn, example, mates, train=True) for mates in batches])
    return outs.std(dim=0).mean()
''', cells=(("output_in_batch", "print(batch_spread(nn.BatchNorm2d(3), torch.randn(3, 4, 4), "
                                 "[torch.randn(4, 3, 4, 4) for _ in range(3)]))\n"),)),
    # ---------------- Q2: plotting, warnings, logging, numpy ----------------
    Habit("cell-time-magic", "Q2", "%%time on a cell that calls the solution",
          cells=(("spread_across_batches", '''%%time
spread = spread_across_batches(torch.randn(3, 4, 4), torch.randn(5, 7, 3, 4, 4))
print(spread)
'''),)),
    Habit("retina-and-rcparams", "Q2", "sharper, bigger plots: the %config line and plt.rcParams in a first cell",
          cells=((FIRST, '''
%config InlineBackend.figure_format = 'retina'
import matplotlib.pyplot as plt
plt.rcParams['figure.figsize'] = (10, 4)
plt.rcParams['axes.grid'] = True
'''),)),
    Habit("warnings-and-logging", "Q2", "silencing warnings and turning logging on at the top of a notebook",
          cells=((FIRST, '''
import logging
import warnings
warnings.filterwarnings('ignore')
logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
log = logging.getLogger('q2')
'''), ("spread_across_batches", '''
log.info("spread with 7 mates: %s", spread_across_batches(torch.randn(3, 4, 4), torch.randn(4, 7, 3, 4, 4)))
'''))),
    Habit("numpy-and-pandas-printing", "Q2", "looking at results as numpy arrays (pandas when it is installed)",
          cells=(("spread_across_batches", '''
import numpy as np
try:
    import pandas as pd
except ImportError:
    pd = None
np.set_printoptions(precision=3, suppress=True)
sizes = [1, 3, 7, 15]
spreads = np.array([spread_across_batches(torch.randn(3, 4, 4), torch.randn(4, m, 3, 4, 4)).numpy() for m in sizes])
print(spreads)
if pd is not None:
    print(pd.DataFrame(spreads, index=sizes))
'''),)),
    Habit("plot-the-spread", "Q2", "a quick plot of what the solution returns",
          cells=(("spread_across_batches", '''
fig, ax = plt.subplots(figsize=(5, 3))
sizes = [1, 2, 4, 8, 16]
ax.plot(sizes, [spread_across_batches(torch.randn(3, 4, 4), torch.randn(4, m, 3, 4, 4)).mean().item()
                for m in sizes], marker='o')
ax.set_xscale('log')
plt.show()
'''),)),
    # ---------------- Q3: the student's own names, debugging, hooks, comparing with torch ----------------
    Habit("own-batch-norm-method", "Q3", "a helper method of one's own named after what it does", measured=True,
          solution="batchnorm",
          edits=((Q3_NORMALISE, "        return self.batch_norm(x, mean, var)\n\n"
                                "    def batch_norm(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:\n"
                                "        \"\"\"The normalisation itself, with the given statistics.\"\"\"\n"
                  + Q3_NORMALISE),)),
    Habit("import-ipython-and-line-magic", "Q3", "IPython's own API for magics, as scripts exported from notebooks have",
          measured=True, cells=(("batchnorm", '''
import IPython
print(IPython.__version__)
get_ipython().run_line_magic('matplotlib', 'inline')
'''),)),
    Habit("compare-with-nn-batchnorm", "Q3", "checking one's layer against nn.BatchNorm2d in a scratch cell",
          cells=(("batchnorm", '''
x = torch.randn(16, 4, 5, 5)
ref, mine = nn.BatchNorm2d(4), BatchNorm(4)
out = ref(x)
print((out - mine(x)).abs().max(), (ref.running_var.view(-1) - mine.vars.view(-1)).abs().max())
print(torch.allclose(F.batch_norm(x, None, None, training=True), BatchNorm(4)(x), atol=1e-5))
'''),)),
    Habit("forward-hook", "Q3", "a forward hook to look at the activations, as the lesson does with Hooks",
          cells=(("batchnorm", '''
stats = []
bn = BatchNorm(4)
handle = bn.register_forward_hook(lambda module, inp, outp: stats.append((outp.mean().item(), outp.std().item())))
for _ in range(3):
    bn(torch.randn(8, 4, 5, 5) * 3 + 1)
handle.remove()
print(stats)
model = nn.Sequential(nn.Conv2d(1, 4, 3), BatchNorm(4), nn.ReLU())
with Hooks(model, append_stats) as hooks:
    model(torch.randn(8, 1, 10, 10))
print(len(hooks))
'''),)),
    Habit("pdb-import-guarded", "Q3", "the debugger imported for a breakpoint that is off", solution="batchnorm",
          prefix="import pdb\n\n",
          edits=(("        if self.training:\n            n = x.numel() // x.shape[1]",
                  "        if False:  # turn on to step through\n            pdb.set_trace()\n"
                  "        if self.training:\n            n = x.numel() // x.shape[1]"),)),
    Habit("help-syntax-and-who", "Q3", "IPython's ? and ?? help, %who and %whos to see what is defined",
          cells=(("batchnorm", "nn.BatchNorm2d?\n"), ("batchnorm", "BatchNorm??\n"), ("batchnorm", "%who\n%whos\n"))),
    Habit("inspect-getsource", "Q3", "printing one's class back (inspect) and help()",
          cells=(("batchnorm", '''
import inspect
print(inspect.getsource(BatchNorm)[:200])
print(inspect.signature(BatchNorm.__init__))
help(BatchNorm.forward)
'''),)),
    Habit("vscode-cell-markers", "Q3", "VS Code's interactive-window cell markers inside the solution",
          solution="batchnorm", prefix="# %%\n", suffix="\n\n# %% [markdown]\n# The layer above; quick check below.\n\n"
                                                       "# %%\nassert BatchNorm(3)(torch.randn(4, 3, 2, 2)).shape == "
                                                       "(4, 3, 2, 2)\n"),
    # ---------------- Q4: shell commands, environment, partial ----------------
    Habit("shell-commands", "Q4", "!nvidia-smi and !pip list to see the machine and the versions (Colab habit)",
          cells=(("conv_layer", "!nvidia-smi\n!pip list 2>/dev/null | grep -i torch\n"),)),
    Habit("environ-and-device", "Q4", "environment variables set at the top, and the usual device line",
          cells=((FIRST, '''
import os
os.environ['CUDA_VISIBLE_DEVICES'] = '0'
os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] = "1"
'''), ("conv_layer", '''
device = 'cuda' if torch.cuda.is_available() else 'cpu'
print(device)
'''))),
    Habit("partial-and-display", "Q4", "functools.partial for a block with fixed arguments, display() to show it",
          cells=(("conv_layer", '''
import functools
from IPython.display import display
block = functools.partial(conv_layer, leak=0.1, sub=0.4, maxv=6.)
display(block(1, 8))
print(sum(p.numel() for p in block(8, 16).parameters()))
'''),)),
    Habit("manual-seed-and-shapes", "Q4", "seeding and printing shapes through the blocks",
          cells=(("conv_layer", '''
torch.manual_seed(0)
x = torch.randn(2, 1, 28, 28)
for ni, nf in zip([1, 8, 16], [8, 16, 32]):
    x = conv_layer(ni, nf)(x)
    print(tuple(x.shape))
'''),)),
    # ---------------- Q5: reloading, plotting a schedule, progress bars, dataclasses ----------------
    Habit("reload-course-lib", "Q5", "reloading a library after editing it (importlib.reload)", measured=True,
          cells=(("combine_schedules", '''
import importlib
import course_lib
course_lib = importlib.reload(course_lib)
'''),)),
    Habit("plot-the-schedule", "Q5", "plotting the learning-rate schedule, as the lesson does",
          cells=(("warmup_anneal", '''
pos = torch.linspace(0, 0.999, 100)
sched = warmup_anneal()
plt.plot(pos, [sched(p.item()) for p in pos])
plt.title('warmup then anneal')
plt.show()
plt.close('all')
'''),)),
    Habit("fastprogress-loop", "Q5", "a progress bar over a loop (fastprogress, the lesson's; tqdm elsewhere)",
          cells=(("combine_schedules", '''
from fastprogress.fastprogress import progress_bar
sched = combine_schedules([0.3, 0.7], [sched_lin(0.6, 2.), sched_lin(2., 0.1)])
values = [sched(i / 50) for i in progress_bar(range(50))]
print(min(values), max(values))
'''),)),
    Habit("dataclass-and-hints", "Q5", "a dataclass and type hints to describe the segments", solution="combine_schedules",
          prefix="from dataclasses import dataclass\n\n\n@dataclass\nclass Segment:\n    start: float\n"
                 "    length: float\n\n\ndef segments(pcts: Sequence[float]) -> list[Segment]:\n"
                 "    return [Segment(sum(pcts[:i]), p) for i, p in enumerate(pcts)]\n\n\n",
          cells=(("combine_schedules", "print(segments([0.3, 0.7]))\n"),)),
    Habit("debug-magic-and-xmode", "Q5", "%xmode for shorter tracebacks, %debug typed after a cell ran fine",
          cells=(("combine_schedules", "%xmode Minimal\n"), ("warmup_anneal", "%debug\n"))),
    # ---------------- Q6: Colab, comparing with F.layer_norm, display ----------------
    Habit("colab-check", "Q6", "the usual check for Colab in a first cell", measured=True,
          cells=((FIRST, '''
import sys
IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    !pip install -q fastai
    from google.colab import drive
    drive.mount('/content/drive')
sys.path.append('..')
'''),)),
    Habit("compare-with-f-layer-norm", "Q6", "checking the layer against F.layer_norm in a scratch cell",
          cells=(("layernorm", '''
x = torch.randn(4, 3, 5, 5)
expected = F.layer_norm(x, x.shape[1:])
print(torch.allclose(LayerNorm()(x), expected, atol=1e-5))
ln = nn.LayerNorm([3, 5, 5], elementwise_affine=False)
print((ln(x) - LayerNorm()(x)).abs().max())
'''),)),
    Habit("no-grad-decorator-helper", "Q6", "@torch.no_grad() on a checking helper and a no_grad block",
          cells=(("layernorm", '''
@torch.no_grad()
def per_example_stats(layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    out = layer(x)
    return out.mean(dim=(1, 2, 3)), out.var(dim=(1, 2, 3), correction=0)

print(per_example_stats(LayerNorm(), torch.randn(3, 2, 4, 4) * 5))
with torch.no_grad():
    print(LayerNorm()(torch.randn(2, 3, 4, 4)).std())
'''),)),
    Habit("display-markdown", "Q6", "IPython.display to show results nicely",
          cells=(("layernorm", '''
from IPython.display import Markdown, display
out = LayerNorm()(torch.randn(2, 3, 4, 4))
display(Markdown(f"mean **{out.mean():.3f}**, std **{out.std():.3f}**"))
display(out.shape)
'''),)),
    Habit("matplotlib-inline-again", "Q6", "%matplotlib inline and plot settings repeated in a first cell",
          cells=((FIRST, "%matplotlib inline\nimport matplotlib as mpl\nmpl.rcParams['figure.dpi'] = 100\n"),)),
    # ---------------- Q7: scratch cells, %who, help, sys.path ----------------
    Habit("scratch-out-instance-norm", "Q7", "a scratch cell's `out` while forward has a local `out`", measured=True,
          solution="instancenorm",
          edits=((Q7_NORMALISE, "        out = (x - mean) / torch.sqrt(var + self.eps) * self.mults + self.adds\n"
                                "        return out"),),
          cells=(("instancenorm", '''
x = torch.randn(2, 3, 4, 4)
out = F.instance_norm(x)
print((out - InstanceNorm(3)(x)).abs().max())
'''),)),
    Habit("who-and-whos", "Q7", "%who to list what is defined", cells=(("instancenorm", "%who\n"),)),
    Habit("help-and-question-mark", "Q7", "help() and ? on one's own class and torch's",
          cells=(("instancenorm", "help(InstanceNorm)\n"), ("instancenorm", "F.instance_norm?\n"))),
    Habit("timing-with-perf-counter", "Q7", "timing by hand, with a seed",
          cells=(("instancenorm", '''
import time
torch.manual_seed(0)
layer, x = InstanceNorm(8), torch.randn(32, 8, 16, 16)
start = time.perf_counter()
for _ in range(10):
    layer(x)
print(f"{(time.perf_counter() - start) / 10 * 1e3:.2f} ms")
'''),)),
    Habit("sys-path-and-environ", "Q7", "a notebook in a subfolder: sys.path and an environment variable",
          cells=((FIRST, '''
import os
import sys
sys.path.append('..')
sys.path.insert(0, os.path.abspath('.'))
os.environ['KMP_DUPLICATE_LIB_OK'] = 'TRUE'
'''),)),
    # ---------------- Q8: scratch cells, dataclasses, logging, numpy ----------------
    Habit("scratch-out-group-norm", "Q8", "a scratch cell's `out` from nn.GroupNorm while forward has a local `out`",
          measured=True, cells=(("groupnorm", '''
x = torch.randn(2, 6, 4, 4)
out = nn.GroupNorm(3, 6)(x)
print((out - GroupNorm(3, 6)(x)).abs().max())
'''),)),
    Habit("equivalences-scratch", "Q8", "checking the equivalences with torch's layers in a scratch cell",
          cells=(("groupnorm", '''
x = torch.randn(2, 6, 5, 5)
print((GroupNorm(6, 6)(x) - F.instance_norm(x)).abs().max())
print((GroupNorm(1, 6)(x) - F.layer_norm(x, x.shape[1:])).abs().max())
print((GroupNorm(2, 6)(x) - F.group_norm(x, 2)).abs().max())
'''),)),
    Habit("dataclass-config", "Q8", "a dataclass holding the layer's settings",
          cells=(("groupnorm", '''
from dataclasses import dataclass, field

@dataclass
class NormConfig:
    groups: int = 2
    channels: int = 6
    eps: float = 1e-5
    shape: tuple[int, ...] = field(default=(4, 6, 3, 3))

cfg = NormConfig()
layer = GroupNorm(cfg.groups, cfg.channels, eps=cfg.eps)
print(layer(torch.randn(*cfg.shape)).shape)
'''),)),
    Habit("logging-in-solution", "Q8", "a module logger in the solution cell", solution="groupnorm",
          prefix="import logging\n\nlogger = logging.getLogger(__name__)\n\n\n",
          edits=(("        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine",
                  "        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine\n"
                  "        logger.debug(\"GroupNorm(%d, %d)\", num_groups, num_channels)"),)),
    Habit("numpy-display", "Q8", "numpy arrays shown with display()",
          cells=(("groupnorm", '''
import numpy as np
from IPython.display import display
out = GroupNorm(2, 4)(torch.randn(3, 4, 2, 2)).detach().numpy()
display(np.round(out.mean(axis=(2, 3)), 3))
'''),)),
    # ---------------- Q9: the debugger, no_grad loops, timing ----------------
    Habit("set-trace-import", "Q9", "fast.ai's debugging habit: set_trace imported, a breakpoint switched off",
          measured=True, solution="running_batchnorm", prefix="from IPython.core.debugger import set_trace\n\n",
          edits=((Q9_TRAINING, "        if False:\n            set_trace()\n" + Q9_TRAINING),)),
    Habit("no-grad-loop", "Q9", "running a few batches under torch.no_grad() to watch the statistics",
          cells=(("running_batchnorm", '''
rbn = RunningBatchNorm(8)
with torch.no_grad():
    for _ in range(3):
        rbn(torch.randn(2, 8, 4, 4))
print(rbn.sums.flatten()[:3], rbn.count, rbn.batch)
'''),)),
    Habit("pdb-magic-off", "Q9", "import pdb and %pdb off, left from a debugging session",
          cells=(("running_batchnorm", "import pdb\n%pdb off\n"),)),
    Habit("time-and-version", "Q9", "%time on one call, versions printed",
          cells=(("running_batchnorm", '''
print(torch.__version__, torch.get_num_threads())
_ = %time RunningBatchNorm(8)(torch.randn(2, 8, 4, 4))
'''),)),
    Habit("inspect-and-pinfo2", "Q9", "?? and inspect on the class while reading the contract",
          cells=(("running_batchnorm", "RunningBatchNorm??\n"), ("running_batchnorm", '''
import inspect
print(inspect.signature(RunningBatchNorm))
'''))),
]


def corpus() -> list[Habit]:
    return list(HABITS)

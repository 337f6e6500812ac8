"""Read the student's code without running it: what it does to the grading machinery, and delegation.

This is the judge's second line. The first is at run time: the probes refuse torch's normalization at the
operator level (course_recorder.guard) and the judge awards points only for the right values. Here the judge
reads every cell the student wrote or changed, as IPython runs it (after IPython's own transformation of magics,
`!` and `?` lines, so one line of IPython syntax never hides a cell), and judges what the code *does*:

- tampering: it writes to or registers into the grading machinery: assigns or deletes in `sys.modules`,
  builtins, torch, the recorder; registers IPython input/AST transformers or event callbacks; sets trace or
  profile hooks; replaces a function's code or a frame's variables; reaches torch's dispatcher (`torch._C`,
  dispatch modes, `torch.library`). Every autograded test of the notebook gets no points; the instructor is told.
- review: what the audit cannot judge by itself: reading frames or code objects, a module looked up in
  `sys.modules` by a name built at run time, code run from a string built at run time, an import of the
  grading code. The scores stand; the notebook is held for the instructor, who clears or confirms it.
- delegation: a graded solution (the names its stub defines, with what they use, resolved the way Python
  resolves them: local names are local, `self.batch_norm` is the student's own) refers to torch's own
  normalization or course_lib's combiner. The tests of that solution get no points, with the line quoted.

Reading the machinery (`"google.colab" in sys.modules`), importing IPython or its debugger, timing, plotting,
reloading code and any magic that only displays or times are ordinary, and never found.

Code too deeply nested to read (a statement whose syntax tree is more than MAX_AST_DEPTH levels deep, which the
recursive readers here could not walk, or a cell ast.parse itself gives up on) is held for review: Python may
still run it (a kernel can raise its recursion limit first), so it is not safe to pass over, and it is not
proof of anything either; the values still decide the scores. The rest of the cell is read as usual. A cell that
is not Python at all (a syntax error) cannot run, and is not found.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable
from dataclasses import dataclass, field

# torch's own normalization: functions, modules and their bases, kernels (the last part of a resolved name).
TORCH_NORMS = frozenset({
    "batch_norm", "layer_norm", "instance_norm", "group_norm", "native_batch_norm", "native_layer_norm",
    "native_group_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training", "cudnn_batch_norm",
    "miopen_batch_norm", "batch_norm_stats", "batch_norm_elemt", "rms_norm", "local_response_norm", "_fused_rms_norm",
    "_batch_norm_with_update", "_batch_norm_impl_index",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d",
    "SyncBatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
    "LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d", "RMSNorm", "_BatchNorm", "_InstanceNorm",
    "_NormBase", "LocalResponseNorm",
})
# Packages whose objects a delegating solution reaches (a forbidden name counts only under one of these).
DELEGATE_ROOTS = frozenset({"torch", "course_lib"})
# The run-time refusal holds in the probe's own thread (torch's modes are per thread): a graded solution that hands
# work to another thread or process is for the instructor to look at.
ELSEWHERE = ("threading.", "_thread.", "concurrent.", "multiprocessing.", "torch.multiprocessing.", "asyncio.",
             "subprocess.", "os.fork", "os.spawn", "os.posix_spawn", "os.system", "os.popen")

# Writing to these (assigning, deleting, setattr, a mutating method) rewires what the tests and the recorder call.
GUARDED_ROOTS = frozenset({"sys", "builtins", "torch", "IPython", "numpy", "math", "json", "base64", "hashlib",
                           "contextlib", "functools", "warnings", "copy", "operator", "types", "importlib", "inspect",
                           "gc", "threading", "traceback", "course_recorder", "course_judge", "course_grader",
                           "course_mutation", "ipykernel", "jupyter_client", "zmq", "nbformat", "nbclient", "nbgrader"})
# ...except these, which are settings made to be changed.
SETTINGS = ("torch.backends.", "sys.argv", "sys.stdout", "sys.stderr", "sys.path", "sys.dont_write_bytecode",
            "warnings.filters", "numpy.random.", "IPython.shell.ast_node_interactivity")
# Writing to these is a student's own choice of their library's behaviour: the instructor decides.
REVIEWED_ROOTS = frozenset({"course_lib"})
MUTATORS = frozenset({"append", "insert", "extend", "pop", "popitem", "update", "setdefault", "clear", "remove",
                      "discard", "add", "__setitem__", "__delitem__", "__setattr__", "__delattr__", "register",
                      "register_magic_function", "register_magics", "set_hook", "set_custom_exc", "push"})
# Calls that install a hook into the interpreter or the shell (resolved names).
HOOKS = frozenset({"sys.settrace", "sys.setprofile", "sys.addaudithook", "sys.set_asyncgen_hooks",
                   "threading.settrace", "threading.setprofile", "threading.settrace_all_threads",
                   "threading.setprofile_all_threads", "IPython.shell.events.register",
                   "IPython.shell.register_magic_function", "IPython.shell.register_magics", "IPython.shell.set_hook",
                   "IPython.shell.set_custom_exc"})
# The shell's machinery: the cell text and trees pass through these before anything runs. The transformer
# lists' names are IPython's alone; the others count only on something known to be the shell.
TRANSFORMERS = frozenset({"input_transformers_cleanup", "input_transformers_post", "input_transformer_manager",
                          "ast_transformers"})
SHELL_MACHINERY = TRANSFORMERS | {"events", "display_pub", "displayhook", "kernel", "user_ns_hidden", "compile",
                                  "display_formatter"}
# torch's dispatcher: a student's code that switches modes or registers kernels can route around the refusal.
DISPATCH = ("torch._C", "torch.utils._python_dispatch", "torch.library", "torch.overrides.TorchFunctionMode",
            "torch.overrides._pop_mode", "torch.overrides.enable_reentrant_dispatch", "torch._ops",
            "torch.utils._mode_utils", "torch._dispatch", "torch._library")
# Frames and code objects: writing them is tampering, reading them is for the instructor to judge.
FRAME_ATTRS = frozenset({"f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace", "tb_frame", "gi_frame",
                         "cr_frame", "ag_frame", "__code__", "__globals__", "__closure__", "co_code", "__builtins__"})
FRAME_CALLS = frozenset({"sys._getframe", "inspect.currentframe", "inspect.stack", "inspect.trace",
                         "inspect.getouterframes", "inspect.getinnerframes", "gc.get_referrers", "gc.get_referents",
                         "gc.get_objects", "types.FunctionType", "types.CodeType", "types.LambdaType"})
# Importing the grading code or raw memory access is not tampering in itself, but no exercise needs it.
REVIEWED_IMPORTS = frozenset({"ctypes", "course_recorder", "course_judge", "course_grader", "course_mutation",
                              "ipykernel", "jupyter_client", "zmq", "nbclient", "nbgrader", "_ctypes", "cffi"})
# Magics that run Python the audit can read (their cell body is audited), and extensions that are ordinary.
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
ORDINARY_EXTENSIONS = frozenset({"autoreload", "line_profiler", "memory_profiler", "watermark", "tensorboard",
                                 "nb_black", "lab_black", "jupyter_black", "rich", "wurlitzer", "ipython_autotime"})

DYNAMIC = "?"  # a name part built at run time
# The deepest statement the audit reads: its readers recurse about four frames a level, so 100 levels stay far from
# Python's recursion limit wherever the judge is called from. Honest code is shallow: the deepest cell of the
# course's notebooks is 12 levels, the deepest module of this project 19.
MAX_AST_DEPTH = 100
TOO_DEEP = f"is nested too deeply for the audit to read (more than {MAX_AST_DEPTH} levels)"


@dataclass
class Finding:
    """One thing the audit found: what, and where (cell index in the notebook, line in the cell)."""

    what: str
    cell: int
    line: int
    code: str

    def __str__(self) -> str:
        # `what` can quote the student's names (an attribute chain, an extension's name): cut, as the code is
        what = self.what if len(self.what) <= 200 else self.what[:200] + "..."
        return f"{what} (cell {self.cell + 1}, line {self.line}: {' '.join(self.code[:1000].split())[:80]})"


@dataclass
class Audit:
    """The findings for one notebook."""

    tampering: list[Finding] = field(default_factory=list)
    delegation: dict[str, Finding] = field(default_factory=dict)  # solution grade_id -> the first forbidden use
    unreadable: list[int] = field(default_factory=list)  # student cells that are not Python even for IPython
    review: list[Finding] = field(default_factory=list)  # what the audit is unsure of: the instructor decides


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_solution(cell) -> bool:
    return bool(_meta(cell).get("solution"))


def _is_instructor(cell) -> bool:
    """Locked nbgrader cells (setup and test cells) are restored from the source before grading."""
    meta = _meta(cell)
    return bool(meta.get("locked") or meta.get("grade")) and not meta.get("solution")


def student_cells(nb, release) -> list[tuple[int, object]]:
    """(index, cell) of every code cell the student wrote or changed: solution cells, and any other code cell
    whose source is not one of the release's (an edited demo cell, a cell the student added)."""
    given = {c.source.strip() for c in release.cells if c.cell_type == "code" and not _is_solution(c)}
    return [(i, cell) for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and not _is_instructor(cell)
            and (_is_solution(cell) or cell.source.strip() not in given)]


_TRANSFORMER = None


def python_of(source: str) -> str:
    """A cell's source as IPython runs it: magics, `!` and `?` lines turned into Python calls, lines kept."""
    global _TRANSFORMER
    if _TRANSFORMER is None:
        from IPython.core.inputtransformer2 import TransformerManager

        _TRANSFORMER = TransformerManager()
    try:
        return _TRANSFORMER.transform_cell(source)
    except Exception:  # noqa: BLE001 - IPython could not read it either: the cell would not run as it is
        return source


def depth(node: ast.AST) -> int:
    """How many levels deep a syntax tree goes (walked without recursion: it may be deeper than Python allows)."""
    deepest, todo = 0, [(node, 0)]
    while todo:
        node, level = todo.pop()
        deepest = max(deepest, level)
        todo.extend((child, level + 1) for child in ast.iter_child_nodes(node))
    return deepest


def readable(source: str) -> tuple[ast.Module | None, list[int]]:
    """The cell's syntax tree without its statements too deep to read, and the lines where those start.

    (None, []) for a cell that is not Python (it cannot run); (None, [1]) for one ast.parse gives up on for its
    depth or size (RecursionError, MemoryError), which a kernel with a higher recursion limit may still run."""
    try:
        tree = ast.parse(python_of(source))
    except (SyntaxError, ValueError):
        return None, []
    except (RecursionError, MemoryError):
        return None, [1]
    deep = [stmt for stmt in tree.body if depth(stmt) > MAX_AST_DEPTH]
    if deep:
        tree.body = [stmt for stmt in tree.body if all(stmt is not d for d in deep)]
    return tree, [getattr(stmt, "lineno", 1) for stmt in deep]


DEFAULT_ALIASES = {"torch": "torch", "nn": "torch.nn", "F": "torch.nn.functional", "np": "numpy", "sys": "sys",
                   "os": "os", "math": "math", "plt": "matplotlib.pyplot", "course_lib": "course_lib",
                   "get_ipython": "IPython.get_ipython", "__builtins__": "builtins"}


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id == "__name__":
        return "__main__"
    return None


class Names:
    """What the notebook's global names stand for: modules and objects of known packages (dotted names).

    Built from every code cell's imports (the instructor's setup cells included: they run in the same namespace)
    and from plain aliases (`ip = get_ipython()`, `mods = sys.modules`, `T = torch`).
    """

    def __init__(self) -> None:
        self.of: dict[str, str] = dict(DEFAULT_ALIASES)

    def learn(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.of[alias.asname] = alias.name
                    else:
                        root = alias.name.split(".")[0]
                        self.of[root] = root
            elif isinstance(node, ast.ImportFrom) and not node.level:
                for alias in node.names:
                    if alias.name != "*":
                        self.of[alias.asname or alias.name] = f"{node.module or ''}.{alias.name}"
        for node in getattr(tree, "body", []):  # module-level aliases: a name bound to a resolvable thing
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                resolved = self.resolve(node.value)
                if resolved:
                    self.of[node.targets[0].id] = resolved

    def scope(self, fn: ast.AST, outer: dict[str, str | None]) -> dict[str, str | None]:
        """The names of a function's own scope: each stands for nothing known, or for what it was assigned
        (`ip = get_ipython()` inside a function is still the shell)."""
        inner = {**outer, **{name: None for name in local_names(fn)}}
        for node in _own_nodes(fn):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and node.targets[0].id in inner:
                resolved = self.resolve(node.value, inner)
                if resolved:
                    inner[node.targets[0].id] = resolved
        return inner

    def resolve(self, node: ast.AST, local: dict[str, str | None] | None = None) -> str | None:
        """The dotted name an expression stands for (`F.batch_norm` -> torch.nn.functional.batch_norm), with `?`
        for a part built at run time; None when it is not something of a known package. `local`: the names of
        the enclosing functions (a local name stands for what it was assigned, or for nothing known)."""
        local = local or {}
        if isinstance(node, ast.Name):
            return local[node.id] if node.id in local else self.of.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value, local)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Subscript):  # sys.modules["x"], vars(m)["f"], m.__dict__["f"]
            base = self.resolve(node.value, local)
            key = _literal(node.slice)
            if base == "sys.modules":
                return key if key is not None else DYNAMIC
            if base and base.endswith(".__dict__"):
                return f"{base[:-len('.__dict__')]}.{key if key is not None else DYNAMIC}"
            if base and DYNAMIC in base.split("."):  # vars(sys)["mod" + "ules"][...]: some module, unknown
                return DYNAMIC
            return None
        if isinstance(node, ast.Call):
            func = self.resolve(node.func, local)
            args = node.args
            if func == "IPython.get_ipython" or (isinstance(node.func, ast.Name) and node.func.id == "get_ipython"):
                return "IPython.shell"
            if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(args) >= 2 and "getattr" not in local:
                base = self.resolve(args[0], local)
                name = _literal(args[1])
                return f"{base}.{name if name is not None else DYNAMIC}" if base else None
            if isinstance(node.func, ast.Name) and node.func.id == "vars" and len(args) == 1:
                base = self.resolve(args[0], local)
                return f"{base}.__dict__" if base else None
            if func in ("importlib.import_module", "builtins.__import__") or (
                    isinstance(node.func, ast.Name) and node.func.id == "__import__" and "__import__" not in local):
                name = _literal(args[0]) if args else None
                return name if name is not None else DYNAMIC
            if func == "importlib.reload" and args:
                return self.resolve(args[0], local)
        return None


def _root(name: str) -> str:
    return name.split(".")[0]


def _targets(node: ast.AST) -> list[ast.AST]:
    """What an assignment or deletion writes to, tuples unpacked."""
    if isinstance(node, ast.Assign):
        found = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        found = [node.target]
    elif isinstance(node, ast.Delete):
        found = list(node.targets)
    else:
        return []
    while any(isinstance(t, (ast.Tuple, ast.List, ast.Starred)) for t in found):
        found = [e for t in found for e in (t.elts if isinstance(t, (ast.Tuple, ast.List))
                                            else [t.value] if isinstance(t, ast.Starred) else [t])]
    return found


class _Scoped(ast.NodeVisitor):
    """A visitor that knows, at each node, the names the enclosing functions, lambdas and comprehensions bind
    themselves (Python's own scoping): `local[-1]` maps each to what it was assigned, or to nothing known."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.local: list[dict[str, str | None]] = [{}]

    def _resolve(self, node: ast.AST) -> str | None:
        return self.names.resolve(node, self.local[-1])

    def _within(self, scope: dict[str, str | None], nodes: list[ast.AST]) -> None:
        self.local.append(scope)
        for node in nodes:
            self.visit(node)
        self.local.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        """Decorators and defaults run in the enclosing scope, the body in the function's own."""
        for outer in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if outer is not None:
                self.visit(outer)
        self._within(self.names.scope(node, self.local[-1]), node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        args = {a.arg: None for a in ast.walk(node.args) if isinstance(a, ast.arg)}
        self._within({**self.local[-1], **args}, [node.args, node.body])

    def _comprehension(self, node: ast.AST) -> None:
        names = {n.id: None for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        self._within({**self.local[-1], **names}, list(ast.iter_child_nodes(node)))

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension


class _Reader(_Scoped):
    """One cell's findings: tampering and review, as (node, what, certain)."""

    def __init__(self, names: Names, line_offset: int = 0) -> None:
        super().__init__(names)
        self.offset = line_offset
        self.found: list[tuple[int, str, bool]] = []  # (line, what, certain)

    def _add(self, node: ast.AST, what: str, certain: bool) -> None:
        self.found.append((getattr(node, "lineno", 1) + self.offset, what, certain))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name in ("__torch_dispatch__", "__torch_function__"):
            self._add(node, f"defines {node.name}, which intercepts torch's operations", False)
        super().visit_FunctionDef(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    # ---- writes ----
    def _write(self, node: ast.AST, target: ast.AST, how: str) -> None:
        if isinstance(target, ast.Attribute) and target.attr in FRAME_ATTRS:
            self._add(node, f"{how} .{target.attr} (a function's code or a frame's variables)", True)
            return
        if isinstance(target, ast.Subscript):  # a write into a container: judged by the container
            name = self._resolve(target.value)
        elif isinstance(target, ast.Attribute):
            name = self._resolve(target) or self._resolve(target.value)
        else:
            return
        if isinstance(target, ast.Attribute) and (target.attr in TRANSFORMERS or (
                target.attr in SHELL_MACHINERY and name and name.startswith("IPython.shell"))):
            self._add(node, f"{how} IPython's {target.attr}", True)
            return
        self._judge_write(node, name, how)

    def _judge_write(self, node: ast.AST, name: str | None, how: str) -> None:
        if not name:
            return
        if name == DYNAMIC or name.startswith(DYNAMIC):  # monkeypatching a module whose name is hidden
            self._add(node, f"{how} a module looked up by a name built at run time", True)
        elif name.startswith(SETTINGS) or name == "IPython.shell":
            return
        elif name.startswith("sys.modules") or _root(name) in GUARDED_ROOTS:
            self._add(node, f"{how} {name}", True)
        elif _root(name) in REVIEWED_ROOTS:
            self._add(node, f"{how} {name}", False)

    def visit_Assign(self, node: ast.AST) -> None:
        for target in _targets(node):
            if not isinstance(target, ast.Name):
                self._write(node, target, "changes" if not isinstance(node, ast.Delete) else "deletes")
        self.generic_visit(node)

    visit_AugAssign = visit_AnnAssign = visit_Delete = visit_Assign

    # ---- calls: setattr, mutating methods, hooks, code run from strings, magics ----
    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        plain = func.id if isinstance(func, ast.Name) and func.id not in self.local[-1] else None
        resolved = self._resolve(func)
        if plain in ("setattr", "delattr") and node.args:
            target = node.args[0]
            name = _literal(node.args[1]) if len(node.args) > 1 else None
            attr = ast.Attribute(value=target, attr=name or DYNAMIC, ctx=ast.Store(), lineno=node.lineno)
            self._write(node, attr, "changes" if plain == "setattr" else "deletes")
        elif isinstance(func, ast.Attribute) and func.attr in MUTATORS:
            name = self._resolve(func.value)
            if isinstance(func.value, ast.Attribute) and (func.value.attr in TRANSFORMERS or (
                    func.value.attr in SHELL_MACHINERY and name and name.startswith("IPython.shell"))):
                self._add(node, f"registers into IPython's {func.value.attr}", True)
            elif name and name.startswith(("sys.modules", "sys.meta_path", "sys.path_hooks", "sys.path_importer_cache")):
                self._add(node, f"changes {name}", True)
            elif name and name not in ("sys.path",) and not name.startswith(SETTINGS) and func.attr.startswith("__"):
                self._judge_write(node, name, "changes")
        if plain in ("getattr", "vars") or resolved in ("importlib.import_module", "builtins.__import__") or \
                plain == "__import__":
            self._dynamic(node, self._resolve(node))
        if resolved in HOOKS:
            self._add(node, f"installs a hook ({resolved})", True)
        elif resolved in FRAME_CALLS:
            self._add(node, f"reads frames or code objects ({resolved})", False)
        if plain in ("exec", "eval", "compile") or resolved in ("builtins.exec", "builtins.eval", "builtins.compile"):
            self._code_string(node, node.args[0] if node.args else None, f"runs code from a string ({plain or resolved})")
        if resolved == "IPython.shell.run_line_magic" and node.args:
            magic = _literal(node.args[0])
            self._line_magic(node, magic, _literal(node.args[1]) if len(node.args) > 1 else "")
            if magic in PYTHON_CELL_MAGICS and len(node.args) > 1:  # %time x = ...: the argument is Python
                self._code_string(node, node.args[1], f"runs the %{magic} magic on code built at run time")
        if resolved == "IPython.shell.run_cell_magic" and len(node.args) >= 3:
            magic = _literal(node.args[0])
            if magic in PYTHON_CELL_MAGICS:
                self._code_string(node, node.args[2], f"runs the %%{magic} magic on code built at run time", 1)
        if resolved in ("IPython.shell.run_cell", "IPython.shell.ex", "IPython.shell.ev") and node.args:
            self._code_string(node, node.args[0], "runs a cell from a string")
        self.generic_visit(node)

    def _code_string(self, node: ast.Call, arg: ast.AST | None, what: str, offset: int = 0) -> None:
        """Code run from a string: a literal is read as part of the cell; anything else is for the instructor."""
        text = _literal(arg)
        if text is None:
            self._add(node, what, False)
            return
        tree, deep = readable(text)
        if deep:
            self._add(node, f"runs code that {TOO_DEEP}", False)
        if tree is None:
            return
        inner = _Reader(self.names, self.offset + node.lineno - 1 + offset)
        inner.visit(tree)
        self.found += inner.found

    def _line_magic(self, node: ast.Call, magic: str | None, args: str | None) -> None:
        args = args or ""
        if magic == "run":
            self._add(node, "runs a file with %run (its code is not in the notebook)", False)
        elif magic in ("load_ext", "reload_ext") and args.split()[:1] and args.split()[0] not in ORDINARY_EXTENSIONS:
            self._add(node, f"loads the IPython extension {args.split()[0]!r}", False)
        elif magic == "config" and ("transformer" in args or "InteractiveShell.ast" in args.replace(" ", "")) \
                and "ast_node_interactivity" not in args:
            self._add(node, "configures IPython's input transformers", True)
        elif magic is None:
            self._add(node, "runs a magic named at run time", False)

    # ---- reads ----
    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self._resolve(node)
        if name and name.startswith(DISPATCH):
            self._add(node, f"reaches torch's dispatcher ({name})", True)
        elif node.attr in FRAME_ATTRS and isinstance(node.ctx, ast.Load):
            self._add(node, f"reads .{node.attr} (frames or code objects)", False)
        elif isinstance(node.ctx, ast.Load) and (node.attr in TRANSFORMERS or (
                node.attr in ("display_pub", "displayhook", "user_ns_hidden") and name and name.startswith("IPython.shell"))):
            self._add(node, f"reads IPython's {node.attr}", False)
        elif isinstance(node.ctx, ast.Load):
            self._dynamic(node, name)
        self.generic_visit(node)

    def _dynamic(self, node: ast.AST, name: str | None) -> None:
        """A module looked up, or an attribute of the grading machinery named, by a string built at run time."""
        if name and (name == DYNAMIC or name.startswith(DYNAMIC + ".")):
            self._add(node, "uses a module looked up by a name built at run time", False)
        elif name and f".{DYNAMIC}" in name and _root(name) in GUARDED_ROOTS - {"torch", "numpy", "math"}:
            self._add(node, f"uses an attribute of {_root(name)} named at run time", False)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        name = self._resolve(node)
        if name == DYNAMIC and isinstance(node.ctx, ast.Load):
            self._add(node, "looks up a module in sys.modules by a name built at run time", False)
        elif name and _root(name) in REVIEWED_IMPORTS and self._resolve(node.value) == "sys.modules":
            self._add(node, f"reaches the grading code ({name}) through sys.modules", False)
        self.generic_visit(node)

    def visit_Import(self, node: ast.AST) -> None:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for name in names:
            full = name if isinstance(node, ast.Import) else name
            if full.startswith(DISPATCH) or (isinstance(node, ast.ImportFrom) and any(
                    f"{name}.{a.name}".startswith(DISPATCH) for a in node.names)):
                self._add(node, f"imports torch's dispatcher ({full})", True)
            elif _root(full) in REVIEWED_IMPORTS:
                self._add(node, f"imports {full}", False)
        self.generic_visit(node)

    visit_ImportFrom = visit_Import

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            name = self._resolve(base)
            if name and name.startswith(DISPATCH):
                self._add(node, f"defines a torch dispatch mode ({name})", True)
        self.generic_visit(node)


def local_names(fn: ast.AST) -> set[str]:
    """The names a function binds itself (parameters, assignments, loops, with, except, imports, nested defs),
    minus those it declares global: what Python resolves in the function's own scope."""
    names: set[str] = set()
    declared_global: set[str] = set()
    args = fn.args
    for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
        if a is not None:
            names.add(a.arg)
    for node in _own_nodes(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not fn:
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.Global):
            declared_global.update(node.names)
    return names - declared_global


def _own_nodes(fn: ast.AST):
    """The nodes of a function's body, not descending into nested functions, lambdas and classes."""
    todo = list(getattr(fn, "body", []))
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo += getattr(node, "decorator_list", [])
            continue
        todo += list(ast.iter_child_nodes(node))


# ---- delegation ----

def _definitions(tree: ast.Module) -> dict[str, list[ast.stmt]]:
    """Top-level names a cell defines -> the statements that define them."""
    out: dict[str, list[ast.stmt]] = {}
    for stmt in tree.body:
        names: list[str] = []
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [stmt.name]
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            names = [n.id for t in _targets(stmt) for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names = [(a.asname or a.name).split(".")[0] for a in stmt.names]
        elif isinstance(stmt, (ast.For, ast.With, ast.If, ast.Try)):
            names = [n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
            names += [n.name for n in ast.walk(stmt) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        for name in names:
            out.setdefault(name, []).append(stmt)
    return out


class _Uses(_Scoped):
    """In one definition: references to forbidden names, and the free (global) names it uses, scope by scope."""

    def __init__(self, names: Names, forbidden: frozenset[str], own: set[str]) -> None:
        super().__init__(names)
        self.forbidden, self.own = forbidden, own
        self.hits: list[tuple[ast.AST, str]] = []
        self.elsewhere: list[tuple[ast.AST, str]] = []  # work handed to another thread or process
        self.free: set[str] = set()

    def _forbidden(self, name: str | None) -> str | None:
        if not name or _root(name) not in DELEGATE_ROOTS:
            return None
        last = name.rsplit(".", 1)[-1]
        return last if last in self.forbidden else None

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and node.id not in self.local[-1]:
            hit = self._forbidden(self.names.of.get(node.id))
            if hit:
                self.hits.append((node, hit))
            elif node.id in self.forbidden and node.id not in self.own and not hasattr(builtins, node.id):
                self.hits.append((node, node.id))  # a global of that name the student did not define
            else:
                self.free.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        hit = self._forbidden(self._resolve(node))
        if hit:
            self.hits.append((node, hit))
            return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        hit = self._forbidden(self._resolve(node))
        if hit:
            self.hits.append((node, hit))
        func = self._resolve(node.func)
        if func and f"{func}.".startswith(ELSEWHERE):
            self.elsewhere.append((node, func))
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        hit = self._forbidden(self._resolve(node))
        if hit:
            self.hits.append((node, hit))
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            hit = self._forbidden(f"{node.module or ''}.{alias.name}")
            if hit:
                self.hits.append((node, hit))


def _stub_names(release_cell) -> set[str]:
    """The names a solution cell's stub defines: what the tests use."""
    tree = readable(release_cell.source)[0] if release_cell is not None else None
    return set(_definitions(tree)) if tree is not None else set()


def audit(nb, release, forbidden: dict[str, frozenset[str]]) -> Audit:
    """The findings for a notebook; `forbidden` maps solution grade_ids to the names they must not use."""
    result = Audit()
    cells = student_cells(nb, release)
    names = Names()
    all_trees: dict[int, ast.Module] = {}
    too_deep: dict[int, list[int]] = {}  # cell index -> the lines of the statements too deep to read
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            tree, deep = readable(cell.source)
            if deep:
                too_deep[index] = deep
            if tree is not None:
                all_trees[index] = tree
                names.learn(tree)
    trees = {i: all_trees[i] for i, _ in cells if i in all_trees}
    result.unreadable = [i for i, _ in cells if i not in all_trees]
    lines = {i: c.source.splitlines() for i, c in cells}

    def finding(index: int, line: int, what: str) -> Finding:
        text = lines[index][line - 1] if 0 < line <= len(lines[index]) else ""
        return Finding(what, index, line, text)

    for index, _ in cells:
        for line in too_deep.get(index, []):
            result.review.append(finding(index, line, f"code that {TOO_DEEP}"))
    for index, tree in trees.items():
        reader = _Reader(names)
        try:
            reader.visit(tree)
        except RecursionError:  # deep and wide at once, or called from deep inside: held, never the grader's failure
            result.review.append(finding(index, 1, f"code that {TOO_DEEP}"))
        for line, what, certain in reader.found:
            (result.tampering if certain else result.review).append(finding(index, line, what))
    result.tampering = list({(f.what, f.cell, f.line): f for f in result.tampering}.values())
    certain = {(f.cell, f.line) for f in result.tampering}  # a line found tampering needs no review as well
    result.review = list({(f.what, f.cell, f.line): f for f in result.review if (f.cell, f.line) not in certain}.values())

    _delegation(result, cells, trees, release, forbidden, names, finding)
    return result


def _delegation(result: Audit, cells: list, trees: dict[int, ast.Module], release, forbidden: dict[str, frozenset[str]],
                names: Names, finding: Callable[[int, int, str], Finding]) -> None:
    """Delegation: what each graded solution's stub defines, with every definition of the student's it uses, read for
    the names that solution must not use (result.delegation); code too deep to read is held for review."""
    definitions: dict[str, list[tuple[int, ast.stmt]]] = {}
    for index, tree in trees.items():
        for name, stmts in _definitions(tree).items():
            definitions.setdefault(name, []).extend((index, s) for s in stmts)
    own = {name for name, stmts in definitions.items()
           if any(not isinstance(s, (ast.Import, ast.ImportFrom)) for _, s in stmts)}
    released = {_meta(c).get("grade_id"): c for c in release.cells if _is_solution(c)}
    by_id = {_meta(c).get("grade_id"): i for i, c in cells if _is_solution(c)}
    for grade_id, banned in forbidden.items():
        index = by_id.get(grade_id)
        if index is None or index not in trees:
            continue
        others = {i for g, i in by_id.items() if g != grade_id}  # other graded solutions are judged on their own
        start = _stub_names(released.get(grade_id)) or set(_definitions(trees[index]))
        todo = [(i, s) for name in start for i, s in definitions.get(name, []) if i not in others]
        seen: set[int] = set()
        while todo:
            cell_index, stmt = todo.pop()
            if id(stmt) in seen:
                continue
            seen.add(id(stmt))
            uses = _Uses(names, banned, own)
            try:
                uses.visit(stmt)
            except RecursionError:
                result.review.append(finding(cell_index, getattr(stmt, "lineno", 1), f"{grade_id} uses code that {TOO_DEEP}"))
                continue
            for node, func in uses.elsewhere[:1]:
                result.review.append(finding(cell_index, getattr(node, "lineno", 1),
                                             f"{grade_id} runs work in another thread or process ({func}), where "
                                             f"the grader's refusal of torch's normalization does not reach"))
            if uses.hits:
                node, name = uses.hits[0]
                result.delegation[grade_id] = finding(cell_index, getattr(node, "lineno", 1), f"uses {name}")
                break
            todo += [d for name in uses.free for d in definitions.get(name, []) if id(d[1]) not in seen
                     and d[0] not in others]

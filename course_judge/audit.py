"""Read the student's code without running it: delegation to torch's own normalization, and tampering.

Values alone cannot show that a layer delegated its math to F.batch_norm, and student code that rewires
the grading kernel (IPython's input transformers, sys.modules, builtins, patched torch functions) can
only be seen in its source. The judge reads every cell the student wrote or changed:

- delegation: the solution cell, with every definition of the student's that it uses (transitively),
  refers to a forbidden name (F.batch_norm, nn.BatchNorm2d, course_lib's combine_scheds...). The tests of
  that solution get no points, with the line quoted.
- tampering: any student cell uses the grader's machinery (see TAMPER_*). Every autograded test of the
  notebook gets no points and the instructor is told why. An honest solution never needs any of it.

A determined student can hide either from a static reading (strings built at run time, for instance);
docs/GRADING_PIPELINE.md says what remains possible. Even then the judge awards points only for the right
values.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

# torch's own normalization: functions, modules and their bases (attribute names and importable names).
TORCH_NORMS = frozenset({
    "batch_norm", "layer_norm", "instance_norm", "group_norm", "native_batch_norm", "native_layer_norm",
    "native_group_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training", "cudnn_batch_norm",
    "miopen_batch_norm", "batch_norm_stats", "batch_norm_elemt", "rms_norm", "local_response_norm",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d",
    "SyncBatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
    "LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d", "RMSNorm", "_BatchNorm", "_InstanceNorm",
    "_NormBase", "LocalResponseNorm",
})

# Attributes no honest solution touches: IPython's cell machinery, frames and code objects.
TAMPER_ATTRS = frozenset({
    "input_transformers_cleanup", "input_transformers_post", "input_transformer_manager", "ast_transformers",
    "register_magic_function", "register_magics", "f_back", "f_globals", "f_locals", "f_builtins", "f_code",
    "tb_frame", "gi_frame", "cr_frame", "__code__", "__globals__", "__builtins__", "__subclasses__", "__closure__",
})
# module.attribute pairs (after resolving import aliases) that rewire the interpreter.
TAMPER_PAIRS = frozenset({
    ("sys", "modules"), ("sys", "settrace"), ("sys", "setprofile"), ("sys", "_getframe"), ("sys", "displayhook"),
    ("sys", "excepthook"), ("sys", "meta_path"), ("sys", "path_hooks"), ("sys", "addaudithook"), ("gc", "get_referrers"), ("gc", "get_referents"), ("gc", "get_objects"),
    ("inspect", "currentframe"), ("inspect", "stack"), ("inspect", "getouterframes"), ("inspect", "trace"),
    ("threading", "settrace"), ("threading", "setprofile"),
})
TAMPER_NAMES = frozenset({"get_ipython", "__import__", "exec", "eval", "compile", "__builtins__"})
# IPython magics that run or load other code into the kernel (plain %time, %matplotlib... are fine).
TAMPER_MAGICS = frozenset({"run", "load", "loadpy", "alias_magic", "reload_ext", "load_ext"})
# Modules whose import alone is tampering (the grading code, the kernel's own machinery, raw memory).
TAMPER_MODULES = frozenset({"ctypes", "builtins", "importlib", "ipykernel", "jupyter_client", "zmq", "nbformat",
                            "nbgrader", "nbclient", "course_recorder", "course_judge", "course_grader",
                            "course_mutation", "course_grading"})
# Modules whose attributes must not be assigned (monkeypatching what the tests and the recorder call).
PATCHED_MODULES = frozenset({"torch", "numpy", "course_lib", "IPython", "math", "sys", "os", "builtins",
                             "functools", "warnings", "json", "base64", "hashlib", "contextlib"})


@dataclass
class Finding:
    """One thing the audit found: what, and where (cell index in the notebook, line in the cell)."""

    what: str
    cell: int
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.what} (cell {self.cell + 1}, line {self.line}: {self.code.strip()[:80]})"


@dataclass
class Audit:
    """The findings for one notebook."""

    tampering: list[Finding] = field(default_factory=list)
    delegation: dict[str, Finding] = field(default_factory=dict)  # solution grade_id -> the first forbidden use
    unreadable: list[int] = field(default_factory=list)  # student cells that do not parse
    review: list[Finding] = field(default_factory=list)  # what the audit is unsure of: the instructor decides


def _python(source: str) -> str:
    """A cell's Python: IPython magic and shell lines blanked (they are read by `magics`), line numbers kept."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        lines[0] = ""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def magics(source: str) -> list[tuple[int, str]]:
    """(line, name) of the magics in a cell that load or run other code."""
    found = []
    for number, line in enumerate(source.splitlines(), start=1):
        text = line.lstrip()
        if text.startswith("%"):
            name = text.lstrip("%").split(maxsplit=1)[0] if text.lstrip("%") else ""
            if name in TAMPER_MAGICS:
                found.append((number, name))
    return found


def _is_solution(cell) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution"))


def _is_instructor(cell) -> bool:
    """Locked nbgrader cells (setup and test cells) are restored from the source before grading."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("locked") or meta.get("grade")) and not meta.get("solution")


def student_cells(nb, release) -> list[tuple[int, object]]:
    """(index, cell) of every code cell the student wrote or changed: solution cells, and any other code cell
    whose source is not one of the release's (an edited demo cell, a cell the student added)."""
    given = {c.source.strip() for c in release.cells if c.cell_type == "code" and not _is_solution(c)}
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or _is_instructor(cell):
            continue
        if _is_solution(cell) or cell.source.strip() not in given:
            out.append((i, cell))
    return out


class _Aliases(ast.NodeVisitor):
    """Which local names stand for which modules (import torch.nn.functional as F -> F: torch.nn.functional)."""

    def __init__(self) -> None:
        self.modules: dict[str, str] = {}

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.modules[alias.asname] = alias.name
            else:
                root = alias.name.split(".")[0]
                self.modules[root] = root

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:  # from torch import nn: nn may be a module
            self.modules[alias.asname or alias.name] = f"{node.module or ''}.{alias.name}"


DEFAULT_ALIASES = {"torch": "torch", "nn": "torch.nn", "F": "torch.nn.functional", "np": "numpy", "sys": "sys",
                   "os": "os", "math": "math", "plt": "matplotlib.pyplot", "course_lib": "course_lib"}


def _chain(node: ast.AST) -> list[str] | None:
    """a.b.c -> ['a', 'b', 'c'] (None when the chain does not start at a name)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _resolved(chain: list[str], aliases: dict[str, str]) -> list[str]:
    head = aliases.get(chain[0])
    return (head.split(".") + chain[1:]) if head else chain


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def tampering(tree: ast.AST, aliases: dict[str, str]) -> list[tuple[ast.AST, str]]:
    """(node, what) for every use of the grader's machinery in one cell's tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                root = name.split(".")[0]
                if root in TAMPER_MODULES or (root == "IPython" and not name.startswith("IPython.display")
                                              and not (isinstance(node, ast.ImportFrom) and name == "IPython"
                                                       and all(a.name == "display" for a in node.names))):
                    found.append((node, f"imports {name}"))
        elif isinstance(node, ast.Attribute):
            if node.attr in TAMPER_ATTRS:
                found.append((node, f"uses .{node.attr}"))
            elif node.attr == "register" and isinstance(node.value, ast.Attribute) and node.value.attr == "events":
                found.append((node, "registers an IPython event callback"))
            chain = _chain(node)
            if chain:
                full = _resolved(chain, aliases)
                if len(full) >= 2 and (full[-2], full[-1]) in TAMPER_PAIRS:
                    found.append((node, f"uses {full[-2]}.{full[-1]}"))
        elif isinstance(node, ast.Name) and node.id in TAMPER_NAMES:
            found.append((node, f"uses {node.id}"))
        targets: list[ast.AST] = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr") \
                and node.args:
            targets = [ast.Attribute(value=node.args[0], attr="?", ctx=ast.Store())]
        while any(isinstance(t, (ast.Tuple, ast.List)) for t in targets):
            targets = [e for t in targets for e in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])]
        for target in targets:  # only attributes of a module itself: os.environ["X"] = ... is not patching
            chain = _chain(target) if isinstance(target, ast.Attribute) else None
            if not chain or (chain[0] not in aliases and chain[0] not in DEFAULT_ALIASES):
                continue
            full = _resolved(chain, {**DEFAULT_ALIASES, **aliases})
            if full[0] in PATCHED_MODULES and not (full[0] == "torch" and len(full) > 1 and full[1] == "backends"):
                found.append((node, f"changes {'.'.join(full[:-1] if full[-1] == '?' else full)}"))
    return found


def forbidden_uses(nodes: list[ast.AST], forbidden: frozenset[str], defined: set[str],
                   docstrings: set[int]) -> list[tuple[ast.AST, str]]:
    """(node, name) for every reference to a forbidden name in the given statements."""
    found = []
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Attribute) and node.attr in forbidden:
                found.append((node, node.attr))
            elif isinstance(node, ast.Name) and node.id in forbidden and node.id not in defined:
                found.append((node, node.id))
            elif isinstance(node, ast.ImportFrom) and any(a.name in forbidden for a in node.names):
                found.append((node, next(a.name for a in node.names if a.name in forbidden)))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in forbidden \
                    and id(node) not in docstrings:
                found.append((node, node.value))
    return found


def _definitions(tree: ast.Module) -> dict[str, list[ast.stmt]]:
    """Top-level names a cell defines -> the statements that define them."""
    out: dict[str, list[ast.stmt]] = {}
    for stmt in tree.body:
        names = []
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [stmt.name]
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names = [(a.asname or a.name).split(".")[0] for a in stmt.names]
        for name in names:
            out.setdefault(name, []).append(stmt)
    return out


def audit(nb, release, forbidden: dict[str, frozenset[str]]) -> Audit:
    """The findings for a notebook; `forbidden` maps solution grade_ids to the names they must not use."""
    result = Audit()
    cells = student_cells(nb, release)
    trees: dict[int, ast.Module] = {}
    for index, cell in cells:
        try:
            trees[index] = ast.parse(_python(cell.source))
        except SyntaxError:
            result.unreadable.append(index)
    lines = {i: _python(c.source).splitlines() for i, c in cells}

    def finding(index: int, node: ast.AST, what: str) -> Finding:
        line = getattr(node, "lineno", 1)
        text = lines[index][line - 1] if 0 < line <= len(lines[index]) else ""
        return Finding(what, index, line, text)

    aliases = dict(DEFAULT_ALIASES)
    for tree in trees.values():
        visitor = _Aliases()
        visitor.visit(tree)
        aliases.update(visitor.modules)
    for index, tree in trees.items():
        result.tampering += [finding(index, node, what) for node, what in tampering(tree, aliases)]
    for index, cell in cells:
        result.tampering += [Finding(f"runs the %{name} magic", index, line, cell.source.splitlines()[line - 1])
                             for line, name in magics(cell.source)]
    # Delegation: each solution cell with everything of the student's it uses, transitively.
    definitions: dict[str, list[tuple[int, ast.stmt]]] = {}
    for index, tree in trees.items():
        for name, stmts in _definitions(tree).items():
            definitions.setdefault(name, []).extend((index, s) for s in stmts)
    defined = {name for name, stmts in definitions.items()
               if any(not isinstance(s, (ast.Import, ast.ImportFrom)) for _, s in stmts)}
    docstrings = set().union(*(_docstring_nodes(t) for t in trees.values())) if trees else set()
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): i for i, c in cells if _is_solution(c)}
    for grade_id, names in forbidden.items():
        index = by_id.get(grade_id)
        if index is None or index not in trees:
            continue
        # The solution is the cell and every other definition of the names it defines (a class written again in a
        # cell the student added is what the tests then use), with what they use in turn.
        own = set(_definitions(trees[index]))
        others = {i for i in by_id.values() if i != index}  # other graded solutions are judged on their own
        todo = [(index, s) for s in trees[index].body]
        todo += [d for name in own for d in definitions.get(name, []) if d[0] != index and d[0] not in others]
        seen: set[int] = set()
        while todo:
            cell_index, stmt = todo.pop()
            if id(stmt) in seen or cell_index in others:
                continue
            seen.add(id(stmt))
            uses = forbidden_uses([stmt], names, defined, docstrings)
            if uses:
                node, name = uses[0]
                result.delegation[grade_id] = finding(cell_index, node, f"uses {name}")
                break
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and node.id in definitions:
                    todo += [d for d in definitions[node.id] if id(d[1]) not in seen]
    return result

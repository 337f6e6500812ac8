"""Build the instructor notebooks in source/ from their reviewable authoring files.

Each notebook is written as a plain Python file in `authoring/` (one `# %% [kind ...]` line opens a
cell), because a .py file diffs and reviews well and an .ipynb does not. This script turns them into
nbgrader source notebooks with the right cell metadata; `tests/test_notebooks_fresh.py` fails when a
committed notebook no longer matches its authoring file.

Cell kinds (the words inside the brackets):
  markdown                          a text cell; every line starts with "# " (or is a bare "#")
  answer id=ID points=P             a manually graded written answer (markdown); its text is the
                                    model answer and mark scheme, which the release replaces
  setup                             code the tests depend on (imports, data); locked
  solution id=ID                    code a student writes: `### BEGIN SOLUTION` ... `### END SOLUTION`
  demo                              "check that it does" code; not graded
  test id=ID points=P               an autograded test cell; locked; may hold
                                    `### BEGIN HIDDEN TESTS` ... `### END HIDDEN TESTS`
  experiment                        student-mode experiments and plots; not graded
  output                            the expected stdout of the cell above (lines "# ..."), stored so
                                    nbval can compare a cell marked `# NBVAL_CHECK_OUTPUT`

Usage: python tools/build_notebooks.py [--check] [NAME ...]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
AUTHORING = ROOT / "authoring"
ASSIGNMENT = "normalization"
SOURCE = ROOT / "source" / ASSIGNMENT

CELL_LINE = re.compile(r"^# %% \[(?P<kind>\w+)(?P<args>[^\]]*)\]\s*$")
KINDS = {"markdown", "answer", "setup", "solution", "demo", "test", "experiment", "output"}


class AuthoringError(ValueError):
    """An authoring file that cannot become a notebook; the message names the file and line."""


def _parse_args(text: str, where: str) -> dict[str, str]:
    args = {}
    for word in text.split():
        if "=" not in word:
            raise AuthoringError(f"{where}: expected key=value, got {word!r}")
        key, value = word.split("=", 1)
        args[key] = value
    return args


def _markdown_text(lines: list[str], where: str) -> str:
    out = []
    for line in lines:
        if line == "#":
            out.append("")
        elif line.startswith("# "):
            out.append(line[2:])
        elif line.strip() == "":
            out.append("")
        else:
            raise AuthoringError(f"{where}: a markdown line must start with '# ': {line!r}")
    return "\n".join(out).strip("\n")


def parse(path: Path) -> list[dict]:
    """Split an authoring file into raw cells: kind, args, text, line."""
    cells: list[dict] = []
    current = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = CELL_LINE.match(line)
        if match:
            kind = match["kind"]
            where = f"{path.name}:{number}"
            if kind not in KINDS:
                raise AuthoringError(f"{where}: unknown cell kind {kind!r}; use one of {sorted(KINDS)}")
            current = {"kind": kind, "args": _parse_args(match["args"], where), "lines": [], "where": where}
            cells.append(current)
        elif current is None:
            if line.strip():
                raise AuthoringError(f"{path.name}:{number}: text before the first '# %% [...]' line")
        else:
            current["lines"].append(line)
    for cell in cells:
        if cell["kind"] in ("markdown", "answer", "output"):
            cell["text"] = _markdown_text(cell["lines"], cell["where"])
        else:
            cell["text"] = "\n".join(cell["lines"]).strip("\n")
    return cells


def _nbgrader(grade_id: str, *, grade: bool, solution: bool, locked: bool, points: float | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution}
    if points is not None:
        meta["points"] = points
    return meta


def _points(cell: dict) -> float | int:
    try:
        value = float(cell["args"]["points"])
    except (KeyError, ValueError):
        raise AuthoringError(f"{cell['where']}: {cell['kind']} cells need points=N") from None
    return int(value) if value.is_integer() else value


def _grade_id(cell: dict) -> str:
    grade_id = cell["args"].get("id")
    if not grade_id or not re.fullmatch(r"[A-Za-z0-9_-]+", grade_id):
        raise AuthoringError(f"{cell['where']}: {cell['kind']} cells need id=NAME (letters, digits, _ and -)")
    return grade_id


def build(path: Path) -> nbformat.NotebookNode:
    """The nbgrader source notebook for one authoring file."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    seen_ids: set[str] = set()
    counters: dict[str, int] = {}
    for raw in parse(path):
        kind = raw["kind"]
        if kind == "output":
            if not nb.cells or nb.cells[-1].cell_type != "code":
                raise AuthoringError(f"{raw['where']}: an output cell must follow a code cell")
            nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=raw["text"] + "\n")]
            nb.cells[-1].execution_count = 1  # nbval skips the comparison for a cell that was never run
            continue
        counters[kind] = counters.get(kind, 0) + 1
        if kind in ("markdown", "answer"):
            cell = nbformat.v4.new_markdown_cell(raw["text"])
        else:
            cell = nbformat.v4.new_code_cell(raw["text"])
        if kind in ("answer", "solution", "test"):
            grade_id = _grade_id(raw)
        else:
            grade_id = f"{kind}-{counters[kind]}"
        if grade_id in seen_ids:
            raise AuthoringError(f"{raw['where']}: id {grade_id!r} is used twice in {path.name}")
        seen_ids.add(grade_id)
        if kind == "answer":
            cell.metadata["nbgrader"] = _nbgrader(grade_id, grade=True, solution=True, locked=False, points=_points(raw))
        elif kind == "solution":
            if "### BEGIN SOLUTION" not in raw["text"]:
                raise AuthoringError(f"{raw['where']}: a solution cell needs ### BEGIN SOLUTION / ### END SOLUTION")
            cell.metadata["nbgrader"] = _nbgrader(grade_id, grade=False, solution=True, locked=False)
        elif kind == "test":
            cell.metadata["nbgrader"] = _nbgrader(grade_id, grade=True, solution=False, locked=True, points=_points(raw))
        elif kind == "setup":
            cell.metadata["nbgrader"] = _nbgrader(grade_id, grade=False, solution=False, locked=True)
        if kind in ("setup", "demo", "experiment"):
            cell.metadata["tags"] = [kind]
        # Stable ids keep the notebooks' git diffs small.
        cell.id = hashlib.sha1(f"{path.stem}/{grade_id}".encode()).hexdigest()[:12]
        nb.cells.append(cell)
    return nb


def target(path: Path) -> Path:
    """Where an authoring file's notebook goes: `_header.py` is the header nbgrader puts on every notebook."""
    if path.stem == "_header":
        return ROOT / "source" / "header.ipynb"
    return SOURCE / f"{path.stem}.ipynb"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale notebooks instead of writing them")
    parser.add_argument("names", nargs="*", help="authoring files to build (default: all)")
    args = parser.parse_args(argv)
    paths = [AUTHORING / (n if n.endswith(".py") else n + ".py") for n in args.names] or sorted(AUTHORING.glob("*.py"))
    stale = []
    SOURCE.mkdir(parents=True, exist_ok=True)
    for path in paths:
        text = nbformat.writes(build(path)) + "\n"
        out = target(path)
        if args.check:
            if not out.exists() or out.read_text() != text:
                stale.append(out.relative_to(ROOT))
        else:
            out.write_text(text)
    if stale:
        print("stale (run `make notebooks`):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

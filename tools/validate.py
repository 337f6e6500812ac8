"""Validate notebooks with nbgrader's Validator and exit non-zero on failure.

`nbgrader validate` exits 0 even when tests fail (GRADING.md), so CI uses this instead.
  python tools/validate.py NOTEBOOK...              every graded test must pass (source notebooks)
  python tools/validate.py --every-cell NOTEBOOK... and every other code cell runs without an error or a line
                                                    on stderr (nbgrader's validate_all): one run proves that a
                                                    solution notebook runs and passes its tests
  python tools/validate.py --invert NOTEBOOK...     every graded test must FAIL (untouched release stubs)
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from nbgrader.validator import Validator
from traitlets.config import Config

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the traceback's colours


def validate(path: str, invert: bool, timeout: int, every_cell: bool = False) -> dict:
    """The Validator's findings for one notebook: {} when it is as expected."""
    config = Config()
    config.Execute.timeout = timeout
    config.Validator.invert = invert
    config.Validator.validate_all = every_cell
    return Validator(config=config).validate(path)


def _describe(cell: dict) -> str:
    """A failing cell: its source (a cell that only wrote to stderr has no error of its own, "No error message"),
    then its error without the traceback's colours."""
    return f"{cell['source'][:300]}\n--> {ANSI.sub('', cell.get('raw_error', ''))[-3000:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invert", action="store_true", help="expect every graded test to fail")
    parser.add_argument("--every-cell", action="store_true",
                        help="also fail on an error or a stderr line in any code cell, graded or not")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    parser.add_argument("notebooks", nargs="+")
    args = parser.parse_args(argv)
    problems = {}
    for path in args.notebooks:
        found = validate(path, args.invert, args.timeout, args.every_cell)
        if found:
            problems[path] = {kind: [_describe(cell) for cell in cells] for kind, cells in found.items()}
    if problems:
        print(json.dumps(problems, indent=1))
        return 1
    print(f"ok: {len(args.notebooks)} notebook(s){' (inverted)' if args.invert else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

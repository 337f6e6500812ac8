"""Validate notebooks with nbgrader's Validator and exit non-zero on failure.

`nbgrader validate` exits 0 even when tests fail (GRADING.md), so CI uses this instead.
  python tools/validate.py NOTEBOOK...            every graded test must pass (source notebooks)
  python tools/validate.py --invert NOTEBOOK...   every graded test must FAIL (untouched release stubs)
"""

from __future__ import annotations

import argparse
import json
import sys

from nbgrader.validator import Validator
from traitlets.config import Config


def validate(path: str, invert: bool, timeout: int) -> dict:
    """The Validator's findings for one notebook: {} when it is as expected."""
    config = Config()
    config.Execute.timeout = timeout
    config.Validator.invert = invert
    return Validator(config=config).validate(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invert", action="store_true", help="expect every graded test to fail")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    parser.add_argument("notebooks", nargs="+")
    args = parser.parse_args(argv)
    problems = {}
    for path in args.notebooks:
        found = validate(path, args.invert, args.timeout)
        if found:
            problems[path] = {kind: [c.get("raw_error") or c["source"][:300] for c in cells] for kind, cells in found.items()}
    if problems:
        print(json.dumps(problems, indent=1))
        return 1
    print(f"ok: {len(args.notebooks)} notebook(s){' (inverted)' if args.invert else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

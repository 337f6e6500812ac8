"""The order of a student's notebooks: the slowest first, by their seconds in earlier runs.

The pipeline hands a backend (workers.py) every notebook of every student as a task, each student's slowest first
(a small JSON file of seconds per notebook, kept with the cached gradebooks), so that the workers sharing one
student end together and the last student of a class is not left with its slowest notebook on one worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from course_grader.autograde import Result


def slowest_first(names: list[str], history: Path) -> list[str]:
    """The notebooks, slowest first according to earlier runs (unknown ones first, then by name)."""
    seconds = _read(history)
    return sorted(names, key=lambda n: (-seconds.get(n, float("inf")), n))


def remember(history: Path, results: dict[str, Result]) -> None:
    """Fold this run's seconds per notebook (notebooks that ran to the end) into the history."""
    seconds = _read(history)
    runs: dict[str, list[float]] = {}
    for result in results.values():
        for name, value in result.seconds.items():
            if name != "total" and name not in result.problems:
                runs.setdefault(name, []).append(value)
    for name, values in runs.items():
        mean = sum(values) / len(values)
        seconds[name] = round(mean if name not in seconds else (seconds[name] + mean) / 2, 2)
    partial = history.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(seconds, indent=1, sort_keys=True))
    os.replace(partial, history)


def _read(history: Path) -> dict[str, float]:
    try:
        data = json.loads(history.read_text())
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}

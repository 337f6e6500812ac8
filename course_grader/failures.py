"""The grader's own failures, told apart from the student's, and their causes in one line.

A student's failure is something their code did: a cell that crashed, hung or ran out of memory. It is graded
(the cells before it keep their points) and reported. A grader failure is everything else that stops a notebook
from being graded: a kernel that did not start or stopped answering, a fork server or worker that died, a
message that did not arrive in time on a busy machine, a full disk, a gradebook that could not be written.
Those are retried (a fresh kernel, then a fresh worker), and a notebook that still cannot be graded is
reported as "not graded: <cause>", never scored.
"""

from __future__ import annotations

import re

# Lines that say nothing about why something failed: Jupyter's log lines below ERROR (ipykernel's warning that it
# runs over TCP without encryption, for one), traceback frames and separators.
_NOISE = re.compile(r"^\[[^\]]*\]\s*(WARNING|INFO|DEBUG)\b"  # [IPKernelApp] WARNING | ...
                    r"|^\[[^\]]*\b(WARNING|INFO|DEBUG)\]"  # [AutogradeApp | INFO] ...
                    r"|^\[[WID] \d"  # [W 2026-12-02 14:00:00.000 ServerApp] ...
                    r"|^(File \"|Traceback \(most recent|During handling|The above exception)"
                    r"|^[-^~=\s]+$")
_WARNING = re.compile(r"^\S+:\d+: \w*Warning\b")  # /path/module.py:12: SAWarning: ...
_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Exit|Interrupt|Failure)\b:?"  # RuntimeError: ...
                        r"|^(?:[a-z_]\w*\.)+[A-Z]\w*: ")  # nbgrader.api.MissingEntry: ...
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
MAX_CHARS = 200


class GraderFailure(Exception):
    """A notebook could not be graded for a reason of the grader's, not the student's (the message says which)."""


def one_line(text: str, limit: int = MAX_CHARS) -> str:
    """`text` on one line, at most `limit` characters."""
    text = " ".join(_ANSI.sub("", text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def meaningful_lines(log: str) -> list[str]:
    """The lines of a log that may say what went wrong: not indented (a traceback's code, a warning's source
    line), not a warning, a frame or a separator; without colour codes."""
    lines = [_ANSI.sub("", line).rstrip() for line in log.splitlines()]
    return [line for line in lines if line and not line[0].isspace() and not _NOISE.search(line)
            and not _WARNING.search(line)]


def root_cause(log: str) -> str:
    """The most telling line of a failed run's log, on one line: its last exception that is not nbgrader's
    summary ("Please see the error above"; of chained exceptions, the last says most), else its last meaningful
    line."""
    lines = meaningful_lines(log)
    # nbgrader indents the tracebacks it logs: exceptions are looked for on indented lines too
    stripped = [_ANSI.sub("", line).strip() for line in log.splitlines()]
    causes = [line for line in stripped if _EXCEPTION.match(line) and "NbGraderException" not in line
              and not _WARNING.search(line)]
    return one_line(causes[-1] if causes else (lines[-1] if lines else "no reason in the log"))

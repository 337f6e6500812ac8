"""Student-made text (a quoted line of their code) made inert for each place it is shown.

Whatever a kernel or a submission produced is hostile data for every reader after it (docs/GRADING_PIPELINE.md):
the terminal (escape sequences), a spreadsheet opening grades.csv (a cell starting with `=` is a formula), the
feedback page (markdown that turns into HTML). Each reader gets its own function; all start from `plain`.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Iterable

LIMIT = 300  # characters of quoted student text anywhere (a finding quotes at most 80 of code)
FORMULA = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula (OWASP's list)


def plain(text: str, limit: int = LIMIT) -> str:
    """One line of printable text: control and format characters (escape sequences, bidi overrides) shown as `?`,
    runs of whitespace as one space, at most `limit` characters."""
    shown = "".join("?" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") and not ch.isspace() else ch
                    for ch in str(text))
    shown = " ".join(shown.split())
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def csv_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula: one line without control characters, and
    a leading `'` when it would start with a formula character (OWASP's rule). Applying it twice changes nothing
    (a guard already there is taken off first), so a row may pass through csv_row again."""
    shown = plain(csv_text(str(text)), limit=10_000)
    return "'" + shown if shown.startswith(FORMULA) else shown


def csv_row(cells: Iterable[object]) -> list[object]:
    """A row for csv.writer: every text cell through csv_cell, numbers as they are. Every CSV the grader writes
    (grades.csv, report.csv) goes through here, so no cell is written raw."""
    return [csv_cell(c) if isinstance(c, str) else c for c in cells]


def csv_text(cell: str) -> str:
    """The text of a cell csv_cell wrote (its formula guard taken off), for a reader that shows it elsewhere."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA) else cell


def markdown(text: str, limit: int = LIMIT) -> str:
    """Text for a markdown cell that renders as exactly these characters: every ASCII punctuation mark is
    backslash-escaped (CommonMark), so no tag, link, code span or emphasis can start."""
    return "".join("\\" + ch if ch in string.punctuation else ch for ch in plain(text, limit))

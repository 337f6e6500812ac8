"""What must never reach a student: lines of the hidden tests, of the judge and of the probes.

The judge scrubs every message that quotes the kernel (an exception's text, a repr) with `scrub`, and the
feedback builder and the tests scan what students receive with `leaks`.

Every message the judge writes is cut to MAX_MESSAGE characters before it is scrubbed (`bounded`): a student's
exception can carry megabytes, and scrubbing a 2,000,000-character message took 3 s. The cut is said
(TRUNCATED), and a line the cut splits is withheld from where it starts quoting a secret line, as the whole line
would be.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)
MIN_LENGTH = 16  # shorter lines (`return out`, `import torch`) say nothing and occur everywhere
WITHHELD = "[withheld: this text quotes the hidden tests]"
# The longest message the judge writes (the longest a reference or catalogued mistake gets is 681 characters): what
# a failed test can carry back to the student, student-chosen text included, is at most this many characters.
MAX_MESSAGE = 2_000
TRUNCATED = "(truncated)"
PARTIAL = 8  # the start of a secret line this long at the end of a cut line is withheld


def _significant(line: str) -> str | None:
    text = line.strip()
    if len(text) < MIN_LENGTH or not re.search(r"[A-Za-z]{3}", text):
        return None
    return text


@functools.lru_cache(maxsize=1)
def package_lines() -> frozenset[str]:
    """Significant lines of the judge (reference math, messages' code) and of the per-notebook probes."""
    import course_judge
    import course_recorder

    files = list(Path(course_judge.__file__).parent.glob("*.py"))
    files += [p for p in Path(course_recorder.__file__).parent.glob("q*.py")]
    out = set()
    for path in files:
        for line in path.read_text().splitlines():
            text = _significant(line)
            if text and not text.startswith(("f\"", "\"", "'", "f'", "#")):  # message text alone is not code
                out.add(text)
    return frozenset(out)


def notebook_lines(nb) -> set[str]:
    """Significant lines of the hidden sections of a notebook's cells."""
    out = set()
    for cell in nb.cells:
        for body in HIDDEN.findall(cell.source):
            out.update(t for t in map(_significant, body.splitlines()) if t)
    return out


def visible_lines(release) -> set[str]:
    """Every line a student already has (the release's cells): never a secret."""
    return {line.strip() for cell in release.cells for line in cell.source.splitlines()}


def student_lines(nb) -> set[str]:
    """The lines of the student's own cells (not graded test cells): quoting them back leaks nothing."""
    out = set()
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not (meta.get("grade") and not meta.get("solution")) and not meta.get("locked"):
            out.update(line.strip() for line in cell.source.splitlines())
    return out


def secret_lines(nb, release) -> frozenset[str]:
    """The lines of the hidden tests (of `nb`), the judge and the probes that neither the release nor the
    student's own cells show."""
    return frozenset((notebook_lines(nb) | package_lines()) - visible_lines(release) - student_lines(nb))


@functools.lru_cache(maxsize=4)
def _long_first(secrets: frozenset[str]) -> tuple[str, ...]:
    """The secrets long enough to look for inside a line, longest first (once per notebook, not per message)."""
    return tuple(sorted((s for s in secrets if len(s) >= 24), key=len, reverse=True))


def scrub(text: str, secrets: frozenset[str]) -> str:
    """`text` with every secret line in it (a whole line, or a long one inside a line) replaced by a notice."""
    if not text or not secrets:
        return text
    long = _long_first(secrets)
    out = []
    for line in text.splitlines():
        if line.strip() in secrets:
            out.append(WITHHELD)
            continue
        for secret in long:
            if secret in line:
                line = line.replace(secret, WITHHELD)
        out.append(line)
    return "\n".join(out)


def leaks(text: str, secrets: frozenset[str]) -> list[str]:
    """The secret lines found in `text` (a whole file a student receives)."""
    lines = {line.strip() for line in text.splitlines()}
    return sorted(s for s in secrets if s in lines or (len(s) >= 24 and s in text))


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` cut to `limit` characters, the cut said (for text no student reads: the instructor's notes)."""
    return text if len(text) <= limit else f"{text[:limit]} {TRUNCATED}"


def _withhold_partial(line: str, secrets: frozenset[str]) -> str:
    """A line cut short: from the first place where what is left of it begins a secret line, withheld."""
    start = len(line)
    for secret in secrets:
        head = secret[:PARTIAL]
        at = line.find(head)
        while 0 <= at < start:
            if secret.startswith(line[at:]):
                start = at
                break
            at = line.find(head, at + 1)
    return line if start == len(line) else line[:start] + WITHHELD


def bounded(text: str, secrets: frozenset[str], limit: int = MAX_MESSAGE) -> str:
    """`text` cut to `limit` characters and then scrubbed (scrub never sees more than `limit`); the result is at
    most `limit` characters and the notice TRUNCATED when anything was cut."""
    cut = len(text) > limit
    if cut:
        lines = text[:limit].split("\n")
        lines[-1] = _withhold_partial(lines[-1], secrets)
        text = "\n".join(lines)
    text = scrub(text, secrets)
    if len(text) > limit:  # a notice longer than what it replaced: cutting scrubbed text reveals nothing
        text, cut = text[:limit], True
    return f"{text} {TRUNCATED}" if cut else text

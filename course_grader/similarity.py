"""Which students' solutions resemble each other beyond what correct solutions must share: the class report's
similarity section (instructor only; the grader process reads the autograded notebooks as data, no kernel runs).

Every correct layer in this course is a few lines with one right formula, so two honest students' code looks alike.
What does not count, therefore:
  - the release's code (the given signatures, docstrings and stubs), and the model solution's code: a passage a
    correct solution holds is no evidence that one student copied another;
  - a passage that many students share (more than COMMON_SHARE of the class, and more than COMMON_MIN students):
    code most of a class writes is how the formula is written, as MOSS's `-m` option has it.
What remains is compared with copydetect (https://github.com/blingenf/copydetect), a maintained implementation of
the winnowing fingerprints of Schleimer, Wilkerson and Aiken (SIGMOD 2003, the algorithm behind MOSS). Its
tokeniser writes every name as `V`, so renamed variables do not hide a copy; a passage is a run of at least K
characters of that tokenised code, so a reordered line breaks only the passages that cross it. The window is 1 (every
K-gram is a fingerprint): copydetect's hash is Python's salted str hash, and a window larger than 1 would pick
different fingerprints in every process; with 1 the ranking is the same every run.

A pair is compared per notebook, over the student's solution cells (by the source's grade_ids, in order). `shared`
is how many tokenised characters of the first student's code lie in passages the second also has; each side's
fraction is that part of its own code beyond the boilerplate. A notebook is flagged when the shared code is at least
MIN_SHARED characters (about three lines) and at least FLAG_FRACTION of both students' own code: a copy, not a
common line. Pairs are ranked by their weight: per notebook the shared code times the smaller of the two fractions,
summed (a short copy that is all two students wrote outranks a long common passage in two long different solutions).

Similarity is a reason to look, never a verdict: the report says so and shows the matching lines side by side.
"""

from __future__ import annotations

import io
import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import nbformat

from course_grader import settings
from course_grader.report import question

K = 25  # copydetect's default noise threshold: a passage is at least this many tokenised characters
MIN_SHARED = 80  # tokenised characters a flagged notebook's pair shares at least (about three lines of code)
FLAG_FRACTION = 0.5  # ... and at least this part of each student's own code
COMMON_SHARE = 0.25  # a passage more than this part of the class has is how the formula is written: not counted
COMMON_MIN = 3  # ... when more than this many students have it
MAX_CODE_CHARS = 64 << 10  # the solution code read from one notebook (a longer one is cut there, and says so)
SHOWN = 10  # pairs shown with their matching lines
SHOWN_ROWS = 50  # pairs in the page's table (every pair that shares a passage is in report.csv)


@dataclass
class Match:
    """One notebook of one pair."""

    notebook: str
    shared: int  # tokenised characters of a's code in passages b has too
    fractions: tuple[float, float]  # of a's and of b's own code (beyond the boilerplate)
    marked: tuple[str, str] = ("", "")  # each side's code as HTML, the matching passages in <mark> (escaped)

    @property
    def flagged(self) -> bool:
        return self.shared >= MIN_SHARED and min(self.fractions) >= FLAG_FRACTION

    @property
    def weight(self) -> float:
        """The shared code, counted in the part it is of the student whose own code it is less of: a long common
        passage in two long solutions that differ elsewhere weighs less than the same passage as all they wrote."""
        return self.shared * min(self.fractions)


@dataclass
class Pair:
    a: str
    b: str
    matches: list[Match] = field(default_factory=list)

    @property
    def shared(self) -> int:
        return sum(m.shared for m in self.matches)

    @property
    def flagged(self) -> list[Match]:
        return [m for m in self.matches if m.flagged]

    @property
    def weight(self) -> float:
        return sum(m.weight for m in self.matches)


@dataclass
class Similarity:
    students: list[str]  # compared (with solution code of their own in some notebook)
    pairs: list[Pair]  # every pair that shares a passage, ranked (heaviest first)
    median: float  # the weight of the median pair of students, all pairs counted (most share nothing)
    boilerplate: str  # what did not count
    notes: list[str] = field(default_factory=list)


def _solution_ids(notebook: Path) -> list[str]:
    nb = nbformat.read(notebook, as_version=4)
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]


def solution_code(path: Path, grade_ids: list[str]) -> tuple[str, str]:
    """The solution cells' code of one notebook, in order, joined; and a note when it could not all be read.

    A submission is hostile data: a file too large is not read, a malformed one gives no code, a cell's source that
    is not text is skipped, the code is cut at MAX_CODE_CHARS."""
    if not path.is_file():
        return "", ""
    if path.stat().st_size > settings.MAX_SUBMISSION_BYTES:
        return "", "too large to read"
    try:  # the JSON as it is, not nbformat's reading of it: every field is checked below
        nb = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return "", "not a readable notebook"
    if not isinstance(nb, dict):
        return "", "not a readable notebook"
    cells = {}
    for cell in nb.get("cells", []) if isinstance(nb.get("cells"), list) else []:
        meta = cell.get("metadata") if isinstance(cell, dict) else None
        meta = meta.get("nbgrader") if isinstance(meta, dict) else None
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if isinstance(grade_id, str) and grade_id in grade_ids and grade_id not in cells \
                and cell.get("cell_type") == "code":
            source = cell.get("source", "")
            if isinstance(source, list) and all(isinstance(line, str) for line in source):
                source = "".join(source)
            if isinstance(source, str):
                cells[grade_id] = source
    code = "\n".join(cells[g] for g in grade_ids if g in cells)
    if len(code) > MAX_CODE_CHARS:
        return code[:MAX_CODE_CHARS], f"cut at {MAX_CODE_CHARS} characters"
    return code, ""


def _fingerprint(code: str, skip: set[int] = frozenset()):
    """copydetect's fingerprints of the code, without those in `skip` (what does not count)."""
    import numpy as np
    from copydetect import CodeFingerprint

    return CodeFingerprint("solution.py", K, 1, boilerplate=np.array(sorted(skip)), language="python",
                           fp=io.StringIO(code))


def given(texts: list[str]) -> set[int]:
    """The fingerprints of the boilerplate's texts (the release's code, the model solution's)."""
    return set().union(*(_fingerprint(text).hashes for text in texts))


def _with_code(codes: dict[str, dict[str, str]]) -> list[str]:
    """The students with solution code in some notebook."""
    return sorted({s for per in codes.values() for s, code in per.items() if code.strip()})


def _mark(code: str, slices, context: int = 2) -> str:
    """The code as HTML, line by line: a line at least half of whose characters lie in matching passages in <mark>,
    CONTEXT lines around them, and `...` for the rest; every character of the student's code escaped.

    Whole lines, not copydetect's passages: a passage starts wherever its first K-gram does, often inside a word,
    and copydetect maps it back to the code only roughly (its tokeniser drops whitespace and shortens names)."""
    import html

    covered = bytearray(len(code))
    for start, end in zip(*(slices if len(slices) else ((), ()))):
        start, end = max(0, int(start)), min(len(code), int(end))
        covered[start:end] = b"\x01" * max(0, end - start)
    lines, marked, at = code.split("\n"), [], 0
    for line in lines:
        chars = [i for i in range(at, at + len(line)) if not code[i].isspace()]
        marked.append(bool(chars) and 2 * sum(covered[i] for i in chars) >= len(chars))
        at += len(line) + 1
    keep = {j for i, m in enumerate(marked) if m for j in range(i - context, i + context + 1)}
    out, gap = [], False
    for i, line in enumerate(lines):
        if i not in keep:
            if not gap:
                out.append('<span class="muted">...</span>')
            gap = True
            continue
        gap = False
        out.append(f"<mark>{html.escape(line)}</mark>" if marked[i] else html.escape(line))
    return "\n".join(out)


def compare(codes: dict[str, dict[str, str]], boilerplate: dict[str, list[str]],
            detail: int = SHOWN) -> tuple[list[Pair], float]:
    """Rank every pair of students: codes {notebook: {student: code}}, boilerplate {notebook: [code, ...]}.

    Returns the pairs that share a passage, ranked, the first `detail` with their marked code; and the median pair's
    shared code over all pairs."""
    from copydetect import compare_files

    students = _with_code(codes)
    found: dict[tuple[str, str], Pair] = {}
    fingerprints: dict[str, dict] = {}  # notebook -> {student: fingerprints}, kept for the marked code below
    for notebook, per in sorted(codes.items()):
        skip = given(boilerplate.get(notebook, []))
        prints = {s: _fingerprint(code, skip) for s, code in per.items() if code.strip()}
        holders = Counter(h for fp in prints.values() for h in fp.hashes)
        common = {h for h, n in holders.items() if n > max(COMMON_MIN, COMMON_SHARE * len(students))}
        if common:
            prints = {s: _fingerprint(per[s], skip | common) for s in prints}
        fingerprints[notebook] = prints
        index = defaultdict(list)  # passage -> students who have it: only pairs with one in common are compared
        for s, fp in sorted(prints.items()):
            for h in fp.hashes:
                index[h].append(s)
        candidates = {(a, b) for holders_ in index.values() for a, b in combinations(holders_, 2)}
        for a, b in sorted(candidates):
            shared, fractions, _ = compare_files(prints[a], prints[b])
            if shared:
                pair = found.setdefault((a, b), Pair(a, b))
                pair.matches.append(Match(notebook, int(shared), (float(fractions[0]), float(fractions[1]))))
    ranked = sorted(found.values(), key=lambda p: (-p.weight, -p.shared, p.a, p.b))
    for pair in ranked[:detail]:  # the marked code, for the pairs shown
        for match in pair.matches:
            prints, code = fingerprints[match.notebook], codes[match.notebook]
            _, _, (sa, sb) = compare_files(prints[pair.a], prints[pair.b])
            match.marked = (_mark(code[pair.a], sa), _mark(code[pair.b], sb))
    everyone = len(students) * (len(students) - 1) // 2
    values = [p.weight for p in ranked] + [0] * (everyone - len(ranked))
    return ranked, round(float(statistics.median(values)), 1) if values else 0.0


def collect(root: Path, students: list[str]) -> Similarity:
    """The similarity of the students' solution code, per notebook of the release, read from the autograded
    notebooks (what grading leaves in the course, whether the class came from submitted/, --class or --zip-collect;
    their solution cells hold the student's code as submitted). A notebook never graded is not compared."""
    assignment = settings.ASSIGNMENT
    release = root / "release" / assignment
    source = root / "source" / assignment
    notebooks = sorted(p.stem for p in release.glob("*.ipynb"))
    codes: dict[str, dict[str, str]] = {}
    boilerplate: dict[str, list[str]] = {}
    notes = []
    for name in notebooks:
        ids = _solution_ids(release / f"{name}.ipynb")
        boilerplate[name] = [solution_code(release / f"{name}.ipynb", ids)[0]]
        if (source / f"{name}.ipynb").is_file():  # its ### BEGIN/END SOLUTION markers are comments: not tokens
            boilerplate[name].append(solution_code(source / f"{name}.ipynb", ids)[0])
        for student in students:
            code, note = solution_code(root / "autograded" / student / assignment / f"{name}.ipynb", ids)
            if note:
                notes.append(f"{student} {question(name)}: {note}")
            codes.setdefault(name, {})[student] = code
    what = "the release's code" + (" and the model solution's" if source.is_dir() else " (no source/: the model "
                                                                                      "solution is not known)")
    pairs, median = compare(codes, boilerplate)
    return Similarity(_with_code(codes), pairs, median, what, notes)

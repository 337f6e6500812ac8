"""The course gradebook: record the assignment, merge each worker's private gradebook, read scores back.

The course gradebook is SQLite (gradebook.db at the course root) or, for a course server, any database
nbgrader supports (PostgreSQL): `--db-url`, or COURSE_DB_URL as nbgrader_config.py reads it. Only the
parent process writes to it, one student at a time, so SQLite's single-writer rule is never broken.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry

from course_grader.settings import ASSIGNMENT  # gradebook.ASSIGNMENT, as the callers know it


def default_db_url(root: Path) -> str:
    """COURSE_DB_URL when set, else the SQLite file at the course root."""
    return driver_url(os.environ.get("COURSE_DB_URL") or f"sqlite:///{root / 'gradebook.db'}")


def driver_url(db_url: str) -> str:
    """Name the pinned driver: SQLAlchemy 2.1 reads a bare postgresql:// URL as psycopg 3, not installed here."""
    for bare in ("postgresql://", "postgres://"):
        if db_url.startswith(bare):
            return "postgresql+psycopg2://" + db_url[len(bare):]
    return db_url


def record_assignment(root: Path, db_url: str, release_dir: Path | None = None) -> None:
    """Record the assignment (notebooks, graded cells, source cells) in a gradebook with generate_assignment.

    The release it builds is thrown away unless `release_dir` says where to keep it.
    """
    nbgrader = Path(sys.executable).with_name("nbgrader")
    env = dict(os.environ, PATH=f"{nbgrader.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(nbgrader), "generate_assignment", ASSIGNMENT, "--force", "--log-level=ERROR",
               f"--CourseDirectory.release_directory={release_dir or Path(tmp) / 'release'}",
               f"--CourseDirectory.db_url={db_url}"]
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment failed:\n{done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def opened(db_url: str) -> Iterator[Gradebook]:
    """nbgrader's Gradebook at db_url, without its own SQLAlchemy autoflush warnings."""
    with warnings.catch_warnings(), Gradebook(db_url) as gb:
        warnings.simplefilter("ignore")
        yield gb


def fingerprint(db_url: str) -> dict | None:
    """What the gradebook knows of the assignment (every notebook's graded, solution and source cells), or None.

    None also when the gradebook does not exist yet or cannot be read: opening a new one would create it
    (nbgrader runs `alembic` for that), which record_assignment does properly.
    """
    path = _sqlite_path(db_url)
    if path and not path.exists():
        return None
    try:
        with opened(db_url) as gb:
            return _fingerprint(gb)
    except Exception:  # noqa: BLE001 - an unreadable gradebook is recorded afresh
        return None


def _fingerprint(gb: Gradebook) -> dict | None:
    try:
        assignment = gb.find_assignment(ASSIGNMENT)
    except MissingEntry:
        return None
    return {nb.name: (sorted((g.name, float(g.max_score), g.cell_type) for g in nb.grade_cells),
                      sorted(c.name for c in nb.solution_cells),
                      sorted((c.name, c.cell_type, bool(c.locked), c.source, c.checksum) for c in nb.source_cells))
            for nb in assignment.notebooks}


def _sqlite_path(db_url: str) -> Path | None:
    """The file of a SQLite gradebook URL; None for a server database."""
    return Path(db_url.removeprefix("sqlite:///")) if db_url.startswith("sqlite:///") else None


def _source_key(root: Path) -> str:
    """A hash of everything generate_assignment reads: source/, nbgrader_config.py and nbgrader's version."""
    import nbgrader

    digest = hashlib.sha256(f"nbgrader {nbgrader.__version__}\n".encode())
    files = sorted(p for p in (root / "source").rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts)
    for path in [root / "nbgrader_config.py", *files]:
        if path.exists():
            digest.update(f"{path.relative_to(root)}\n".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def template(root: Path, dest: Path, cache: Path) -> bool:
    """Write a gradebook with only the assignment recorded to `dest`; True when it came from the cache.

    generate_assignment takes about 5 s; its result depends only on source/, the config and nbgrader's
    version, so it is kept in `cache` (private to the grader: the gradebook holds the hidden tests).
    """
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cache, 0o700)
    cached = cache / f"assignment-{_source_key(root)}.db"
    if cached.exists():
        shutil.copy(cached, dest)
        return True
    record_assignment(root, f"sqlite:///{dest}")
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    shutil.copy(dest, partial)
    os.replace(partial, cached)  # atomic: a concurrent run sees the whole file or none
    return False


def ensure_recorded(root: Path, db_url: str, template_db: Path) -> bool:
    """Record the assignment in the course gradebook unless it already holds exactly the template's; True if it did.

    A SQLite gradebook that does not exist yet starts as a copy of the template.
    """
    path = _sqlite_path(db_url)
    if path and not path.exists():
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        shutil.copy(template_db, partial)
        os.replace(partial, path)
        return True
    if fingerprint(db_url) == fingerprint(f"sqlite:///{template_db}"):
        return False
    record_assignment(root, db_url)
    return True


def merge(student_db: Path, db_url: str, student: str, notebooks: list[str]) -> None:
    """Copy one student's grades and comments for `notebooks` from a worker's gradebook into the course's."""
    with opened(f"sqlite:///{student_db}") as src, opened(db_url) as dst:
        try:
            submission = src.find_submission(ASSIGNMENT, student)
        except MissingEntry:
            return
        dst.update_or_create_student(student)
        # Workers sharing one student each have the submission; only one may know its timestamp.
        dst.update_or_create_submission(ASSIGNMENT, student,
                                        **({"timestamp": submission.timestamp} if submission.timestamp else {}))
        for notebook in submission.notebooks:
            if notebook.name not in notebooks:
                continue
            for grade in notebook.grades:
                target = dst.find_grade(grade.name, notebook.name, ASSIGNMENT, student)
                target.auto_score = grade.auto_score
                target.needs_manual_grade = grade.needs_manual_grade
                # A manual score the instructor already entered survives a regrade.
                if grade.manual_score is not None:
                    target.manual_score = grade.manual_score
                if target.manual_score is not None and not grade.needs_manual_grade:
                    target.needs_manual_grade = False
            for comment in notebook.comments:
                target = dst.find_comment(comment.name, notebook.name, ASSIGNMENT, student)
                target.auto_comment = comment.auto_comment
        dst.db.commit()


@dataclass
class NotebookScore:
    """One student's score on one notebook, as the gradebook has it."""

    score: float
    max_score: float
    needs_manual_grade: bool
    tests: dict[str, float]  # autograded test cell -> points


def scores(db_url: str, students: list[str]) -> dict[str, dict[str, NotebookScore]]:
    """{student: {notebook: NotebookScore}} for the students that have a submission."""
    out: dict[str, dict[str, NotebookScore]] = {}
    with Gradebook(db_url) as gb:
        for student in students:
            try:
                submission = gb.find_submission(ASSIGNMENT, student)
            except MissingEntry:
                continue
            out[student] = {
                nb.name: NotebookScore(
                    float(nb.score), float(nb.max_score), bool(nb.needs_manual_grade),
                    {g.name: float(g.score) for g in nb.grades if g.cell_type == "code"})
                for nb in submission.notebooks}
    return out


def _tests(gb: Gradebook, student: str, notebook: str) -> list:
    """The grades of a submitted notebook's autograded test cells (code cells that are not answers)."""
    submitted = gb.find_submission_notebook(notebook, ASSIGNMENT, student)
    answers = {c.name for c in submitted.notebook.solution_cells}
    return [g for g in submitted.grades if g.cell_type == "code" and g.name not in answers]


def zero_tests(db_url: str, student: str, notebook: str) -> dict[str, float | None]:
    """Score 0 on the notebook's autograded tests as nbgrader's manual score; the manual scores it replaced."""
    with opened(db_url) as gb:
        kept = {}
        for grade in _tests(gb, student, notebook):
            kept[grade.name] = grade.manual_score
            grade.manual_score = 0.0
        gb.db.commit()
    return kept


def restore_tests(db_url: str, student: str, notebook: str, kept: dict[str, float | None]) -> None:
    """Put back the manual scores zero_tests replaced (None: the autograded score counts again)."""
    with opened(db_url) as gb:
        try:
            grades = _tests(gb, student, notebook)
        except MissingEntry:
            return
        for grade in grades:
            if grade.name in kept:
                grade.manual_score = kept[grade.name]
        gb.db.commit()


def max_scores(db_url: str) -> dict[str, float]:
    """{question (Q4): its points} as the gradebook records the assignment (autograded and manually graded)."""
    from course_grader.report import question

    with opened(db_url) as gb:
        return {question(nb.name): float(nb.max_score) for nb in gb.find_assignment(ASSIGNMENT).notebooks}

"""The instructor's view of a fresh clone: nbgrader's folders, an exchange formgrader can use, demo answers a
student could have written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat

from course_mutation import demo

ROOT = Path(__file__).resolve().parent.parent
NBGRADER_FOLDERS = ("source", "release", "submitted", "autograded", "feedback", "exchange")


def test_every_nbgrader_folder_is_in_the_clone_and_says_what_writes_it():
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
                  .stdout.splitlines())
    for folder in NBGRADER_FOLDERS:
        assert any(name.startswith(f"{folder}/") for name in tracked), f"{folder}/ is not in the repository"
    for folder in ("submitted", "autograded", "feedback", "exchange"):
        readme = f"{folder}/README.md"
        assert readme in tracked, readme
        text = (ROOT / readme).read_text().strip()
        assert text and "\n" not in text, f"{readme}: one line"


def test_formgrader_finds_the_courses_exchange_and_shows_no_warning():
    """nbgrader's API is what formgrader asks: with the default exchange (/srv/nbgrader/exchange) every page warns."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    assert Path(api.exchange_root).resolve() == (ROOT / "exchange").resolve(), api.exchange_root
    assert not api.exchange_missing and api.exchange_is_functional


def _answers(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("solution") and cell.cell_type == "markdown":
                out[meta["grade_id"]] = cell.source
    return out


def test_demo_students_write_their_own_answers_never_the_mark_scheme(tmp_path):
    release = ROOT / "release" / "normalization"
    source = ROOT / "source" / "normalization"
    model = _answers(source)
    prompts = _answers(release)
    assert model and set(model) == set(prompts)
    written = {}
    for plan in demo.plans(sorted(p.stem for p in release.glob("*.ipynb")), ["Q3_batchnorm"], ["Q3_batchnorm"]):
        if plan.how in ("crash", "hang", "delete", "paste"):
            continue
        demo.write_student(plan, source, release, tmp_path / plan.student)
        written[plan.student] = _answers(tmp_path / plan.student)
    assert written["blank"] == prompts  # the untouched release
    for student in ("reference", *demo.REALISTIC):
        for grade_id, text in written[student].items():
            assert text != prompts[grade_id] and len(text.split()) >= 2, (student, grade_id)
            key_lines = {line.strip() for line in model[grade_id].splitlines() if len(line.strip()) > 30}
            leaked = [line for line in key_lines if line in text]
            assert not leaked, (student, grade_id, leaked[:1])
    for grade_id in model:  # students of different quality write different things
        assert len({written[s][grade_id] for s in ("reference", "alice", "carol")}) == 3, grade_id


def test_the_demo_class_shows_a_mistake_and_a_correct_alternative_in_every_graded_solution_cell(tmp_path):
    """Every graded solution cell (Q4's fold_bn, Q6's RMSNorm and Q9's recalibrate_bn included) holds a catalogued
    mistake for some realistic demo student and a correct alternative for another, so the class report shows every
    part; each chosen variant's code is what the student's notebook holds."""
    release = ROOT / "release" / "normalization"
    source = ROOT / "source" / "normalization"
    names = sorted(p.stem for p in release.glob("*.ipynb"))
    graded_cells = {}
    for name in names:
        nb = nbformat.read(source / f"{name}.ipynb", as_version=4)
        solutions = [c.metadata.nbgrader["grade_id"] for c in nb.cells
                     if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]
        graded_cells.update({(name, s): nb for s in solutions})
    wrong, right = set(), set()
    for plan in demo.plans(names, names, names):
        if plan.student not in demo.REALISTIC:
            continue
        demo.write_student(plan, source, release, tmp_path / plan.student)
        for name, variants in plan.variants.items():
            written = {c.metadata.nbgrader["grade_id"]: c.source for c in
                       nbformat.read(tmp_path / plan.student / f"{name}.ipynb", as_version=4).cells
                       if c.metadata.get("nbgrader", {}).get("solution")}
            for variant in variants:
                (right if variant.correct else wrong).add((name, variant.solution))
                reference = demo.reference_code(next(c.source for c in graded_cells[(name, variant.solution)].cells
                                                     if c.metadata.get("nbgrader", {}).get("grade_id") == variant.solution))
                assert written[variant.solution] == variant.source(reference).strip("\n"), (plan.student, variant.name)
    assert set(graded_cells) - wrong == set(), sorted(set(graded_cells) - wrong)
    assert set(graded_cells) - right == set(), sorted(set(graded_cells) - right)


def test_demo_students_share_no_variant_and_the_copier_disguises_what_it_copied(tmp_path):
    """Only the copier's code resembles another student's beyond the release and the model solution (the class
    report's similarity section ranks that pair first): no two realistic students use the same catalogue variant of a
    cell, and the copier's copied cells are the victim's with other names and swapped lines, everything else the
    model solution."""
    release = ROOT / "release" / "normalization"
    source = ROOT / "source" / "normalization"
    names = sorted(p.stem for p in release.glob("*.ipynb"))
    plans = {plan.student: plan for plan in demo.plans(names, names, names)}
    used = {}
    for student in demo.REALISTIC:
        for name, variants in plans[student].variants.items():
            for variant in variants:
                assert (name, variant.name) not in used, (student, used.get((name, variant.name)), variant.name)
                used[(name, variant.name)] = student
    victim, copied = demo.COPIED
    written = {}
    for student in ("reference", victim, "copier"):
        demo.write_student(plans[student], source, release, tmp_path / student)
        written[student] = {(name, c.metadata.nbgrader["grade_id"]): c.source for name in names
                            for c in nbformat.read(tmp_path / student / f"{name}.ipynb", as_version=4).cells
                            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}
    changed = {key for key in written["copier"] if written["copier"][key] != written["reference"][key]}
    assert {demo.question(name) for name, _ in changed} == set(copied)
    for key in changed:
        mine, theirs = written["copier"][key], written[victim][key]
        assert mine != theirs and sorted(mine.split()) != sorted(theirs.split()), key  # renamed, not only moved
        assert len(mine.splitlines()) == len(theirs.splitlines()), key  # the same code, laid out the same


ENGINE_IMPORTS = """
import importlib, pkgutil, sys
import course_grader
for info in pkgutil.walk_packages(course_grader.__path__, "course_grader."):
    if info.name != "course_grader.__main__":
        importlib.import_module(info.name)
importlib.import_module("course_grader.__main__")
print(sorted(name for name in sys.modules if name.split(".")[0] == "course_mutation"))
"""


def test_the_grading_engine_imports_nothing_of_the_test_tooling():
    """course_mutation holds complete solutions (the catalogue) and the demo class: the engine never imports it."""
    import sys

    done = subprocess.run([sys.executable, "-c", ENGINE_IMPORTS], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-2000:]


# The engine's limits (course_grader/settings.py): names a value of theirs may be bound to, and the CLI's flags.
LIMIT_NAMES = {"cell_timeout", "notebook_timeout", "memory_mb", "scratch_mb", "worker_memory_mb", "max_output_bytes",
               "max_cell_output_bytes", "max_notebook_output_bytes", "max_record_bytes", "max_submission_bytes",
               "per_output", "per_cell", "per_notebook", "per_test_records", "timeout", "warm_idle", "idle"}


def limit_literals(package: Path) -> list[str]:
    """Where a module other than settings.py gives one of the limits a number of its own (a default, a trait, a
    field, a CLI flag's default) instead of settings' name for it."""
    import ast

    def numeric(node) -> bool:
        return any(isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)
                   and n.value not in (0, 1) for n in ast.walk(node))

    found = []
    for path in sorted(package.glob("*.py")):
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets, value = [], None
            if isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            elif isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            names = {t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else "" for t in targets}
            if value is not None and {n.lower() for n in names} & LIMIT_NAMES and numeric(value):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)[:80]}")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                default = next((k.value for k in node.keywords if k.arg == "default"), None)
                if any(f.lstrip("-").replace("-", "_") in LIMIT_NAMES for f in flags) and default is not None \
                        and numeric(default):
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)[:80]}")
    return found


def test_every_limit_is_declared_once_in_settings():
    """A limit's number lives in course_grader/settings.py (or the course's nbgrader_config.py, for the cell limit)
    and nowhere else in the engine: the CLI, Options, Job, the kernel's traits and the sandbox take its name."""
    assert (ROOT / "course_grader" / "settings.py").exists()
    assert limit_literals(ROOT / "course_grader") == []


def test_the_engine_reads_the_cell_limit_from_nbgrader_config(tmp_path):
    from course_grader import settings

    assert settings.cell_timeout(ROOT) == 90  # nbgrader_config.py's c.Execute.timeout
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\nc.Execute.timeout = 33\n")
    assert settings.cell_timeout(tmp_path) == 33
    assert settings.cell_timeout(tmp_path / "nowhere") == settings.CELL_TIMEOUT


def test_make_test_fast_names_test_files_that_exist():
    """`make test-fast` lists its test files by name: each must exist (a renamed file would silently drop out)."""
    import re

    text = (ROOT / "Makefile").read_text()
    block = re.search(r"^FAST_TESTS :=(.*?)(?:\n\n)", text, re.S | re.M)
    assert block, "Makefile has no FAST_TESTS"
    listed = re.sub(r"\$\(wildcard ([^)]*)\)", r"\1", block[1].replace("\\\n", " "))
    names = [n for n in listed.split() if "*" not in n]
    globs = [n for n in listed.split() if "*" in n]
    assert all(list(ROOT.glob(g)) for g in globs), globs
    assert len(names) >= 8, names
    missing = [n for n in names if not (ROOT / n).is_file()]
    assert not missing, missing


MAX_FUNCTION_LINES = 60


def long_functions(folder: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """'path:line name (n lines)' for every function or method in folder's modules longer than limit lines (its
    nested functions counted in it)."""
    import ast

    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(folder.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_of_the_checks_or_the_judge_is_longer_than_60_lines(tmp_path):
    """A visible check or a verdict that runs for pages (check_batchnorm was 155 lines of nested closures) hides
    which input, which expectation and which named mistake each part is about: split it into helpers."""
    assert long_functions(ROOT / "course_lib") == []
    assert long_functions(ROOT / "course_judge") == []
    (tmp_path / "long.py").write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)  # 61 lines: caught
    assert [line.split()[1] for line in long_functions(tmp_path)] == ["f"]


# ---- one catalogue of named mistakes (course_lib.mistakes) ----------------------------------------------------

MISTAKE_ID = r"[a-z][a-z0-9]*\.[a-z0-9_]+"
NAMING_CODE = [ROOT / "course_lib" / "checks.py", *sorted((ROOT / "course_judge").glob("*.py"))]


def mistakes_outside_the_catalogue(paths: list[Path], catalogue: dict[str, str], named: str) -> list[str]:
    """'file:line what' wherever code names a mistake other than by a catalogue id: a key of a `mistakes=` dict, or of
    any dict literal holding an id, that is not an id (a sentence, an f-string); a sentence-long key assigned into a
    dict; `mistake=` given a string that is not an id; an id-shaped string of a catalogued part that is not in the
    catalogue (a typo; a prefix given to startswith is not an id); a catalogue sentence, or the prefix `named` that
    introduces one, written out."""
    import ast
    import re

    parts = {mistake.split(".")[0] for mistake in catalogue}
    found = []

    def bad_key(key: ast.expr | None) -> bool:
        if isinstance(key, ast.Constant):
            return isinstance(key.value, str) and key.value not in catalogue
        return isinstance(key, (ast.JoinedStr, ast.BinOp))

    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
        prefixes = {id(arg) for call in calls if getattr(call.func, "attr", "") in ("startswith", "endswith")
                    for arg in call.args}
        given = {id(k.value) for call in calls for k in call.keywords if k.arg == "mistakes"}
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    value = keyword.value
                    if keyword.arg == "mistakes" and isinstance(value, ast.Dict):
                        found += [f"{where} mistakes= key {ast.unparse(k)[:60]}" for k in value.keys if bad_key(k)]
                    if keyword.arg == "mistake" and isinstance(value, (ast.Constant, ast.JoinedStr)) and bad_key(value):
                        found += [f"{where} mistake={ast.unparse(value)[:60]}"]
            elif isinstance(node, ast.Dict) and id(node) not in given and any(
                    isinstance(k, ast.Constant) and k.value in catalogue for k in node.keys):
                found += [f"{where} key {ast.unparse(k)[:60]} beside catalogue ids" for k in node.keys if bad_key(k)]
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                key = node.slice
                if isinstance(key, ast.JoinedStr) or isinstance(key, ast.Constant) and isinstance(key.value, str) \
                        and " " in key.value:
                    found.append(f"{where} a sentence as a key: {ast.unparse(key)[:60]}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if re.fullmatch(MISTAKE_ID, text) and text.split(".")[0] in parts and text not in catalogue \
                        and id(node) not in prefixes:
                    found.append(f"{where} {text!r} is not in the catalogue")
                if named in text or any(sentence in text for sentence in catalogue.values()):
                    found.append(f"{where} a catalogue sentence written out: {text[:60]!r}")
    return sorted(found)


def test_named_mistakes_are_written_once_in_the_catalogue(tmp_path):
    """The visible checks and the judge name a mistake by its id in course_lib.mistakes, whose sentence is the only
    one written (the class report groups by id): no sentence beside an id, none written twice, every id used."""
    import ast
    import re

    from course_lib.mistakes import MISTAKES, NAMED

    assert all(re.fullmatch(MISTAKE_ID, mistake) for mistake in MISTAKES), [m for m in MISTAKES
                                                                             if not re.fullmatch(MISTAKE_ID, m)]
    assert len(set(MISTAKES.values())) == len(MISTAKES), "two mistakes share a sentence"
    assert all(s == s.strip() and s.endswith(".") and "\n" not in s for s in MISTAKES.values())
    assert mistakes_outside_the_catalogue(NAMING_CODE, MISTAKES, NAMED) == []
    used = {node.value for path in NAMING_CODE for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant)}
    assert sorted(set(MISTAKES) - used) == [], "catalogued mistakes nothing names"

    wrong = tmp_path / "wrong.py"  # each way of writing a mistake outside the catalogue is caught
    wrong.write_text('expect_close(a, b, "w", mistakes={"bn.no_eps": t, "you forgot eps.": t, f"eps {e}": t})\n'
                     'raise Fail("x", mistake="bn.no_such_mistake")\n'
                     'found["you swapped them: scale first."] = t\n'
                     'message = "This is what you get if " + "you left out eps: divide by sqrt(var + eps)."\n')
    found = mistakes_outside_the_catalogue([wrong], {"bn.no_eps": "you left out eps: divide by sqrt(var + eps)."},
                                           "This is what you get if ")
    assert [line.split()[0] for line in found] == ["wrong.py:1", "wrong.py:1", "wrong.py:2", "wrong.py:2",
                                                   "wrong.py:3", "wrong.py:4", "wrong.py:4"], found

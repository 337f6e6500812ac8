"""The built-in demo class, generated from source/ and the mutation catalogue (never stale): test tooling, beside the
catalogue whose complete solutions it uses; the grading engine (course_grader) imports nothing of it. `make grade`
builds it into submitted/ (`python -m course_mutation.demo`), then grades that folder as any class.

Every student's notebooks are the release notebooks with solution cells filled in:
  reference  the instructor's solutions (full autograded marks; written answers wait for manual grading)
  blank      the untouched release (zero)
  alice, bob, carol, dave
             realistic students: in some notebooks one known mistake from the mutation catalogue, in the
             others a correct alternative written differently (CHOICES names them)
  crasher    reference, but one solution cell ends with os._exit(1): the kernel dies mid-notebook
  looper     reference, but one solution cell ends in an infinite loop
  deleter    reference with one test cell deleted
  paster     reference with one test cell pasted twice (a duplicated grade_id)
  copier     reference, but Q3's and Q8's solutions are dave's, with the local variables renamed and independent
             lines swapped (disguise): the pair the class report's similarity section must rank first
Written answers are the release's cells with text a student would write (demo_answers.py), of three qualities.
No two realistic students share a catalogue variant, so that only the copier's code resembles another student's
beyond what the release and the model solution hold (tests/test_similarity.py).
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from course_grader import settings
from course_grader.settings import ASSIGNMENT
from course_mutation import demo_answers
from course_mutation import Variant, find

REALISTIC = ("alice", "bob", "carol", "dave")
# Each realistic student's variants per notebook, by name (so that the catalogue can grow without changing the class):
# in some solution cells a known mistake, in the others a correct alternative written differently. A notebook with
# several graded solution cells (Q1, Q4's conv_layer and fold_bn, Q5, Q6's LayerNorm and RMSNorm, Q9's RunningBatchNorm
# and recalibrate_bn) takes one variant per cell; every graded solution cell holds a mistake for one student and a
# correct alternative for another, so that the class report shows every part (test_course_layout checks).
CHOICES = {
    "alice": {"Q1": "unbiased_variance", "Q2": "module_and_moments", "Q3": "momentum_flipped",
              "Q4": ("ordered_dict_names", "fold_unbiased_variance"), "Q5": "schedules_reversed",
              "Q6": ("flatten_per_example", "rms_mean_subtracted"), "Q7": "affine_before_normalising",
              "Q8": "manual_sums", "Q9": ("eval_updates_buffers", "recal_list_and_state_dict")},
    "bob": {"Q1": ("flatten_positions", "mode_not_restored"), "Q2": "std_over_trials_and_positions", "Q3": "via_einsum",
            "Q4": ("batchnorm1d", "fold_einsum_state_dict"), "Q5": ("float64_tensor_lesson_style", "anneal_ends_at_zero"),
            "Q6": ("keepdim_dropped", "rms_rsqrt_pow"), "Q7": "flatten_maps", "Q8": "no_channel_check",
            "Q9": ("einsum_and_where", "recal_momentum_kept")},
    "carol": {"Q1": "per_example_axes", "Q2": "functional_loop", "Q3": "running_stats_on_graph",
              "Q4": ("add_module_and_defaults", "fold_conv_bias_forgotten"), "Q5": "delegates_to_course_lib",
              "Q6": ("parameters_with_full", "rms_scalar_weight"), "Q7": "delegates_to_instance_norm",
              "Q8": "einsum_unfold", "Q9": ("nan_when_untrained", "recal_left_in_train")},
    "dave": {"Q1": "save_and_restore", "Q2": "no_shape_checks", "Q3": "via_channels_first_var_mean",
             "Q4": ("norm_before_activation", "fold_probe_in_eval_mode"), "Q5": "lambdas",
             "Q6": ("eps_outside_sqrt", "rms_flatten_norm"), "Q7": "checks_against_parameter_shape",
             "Q8": "interleaved_groups", "Q9": ("explicit_lerp_in_place_buffers", "recal_not_reset")},
}
# The copier: whose solutions, in which notebooks (dave's are code of his own: a correct Q3 and Q8's mistake).
COPIED = ("dave", ("Q3", "Q8"))
PACKAGES = (*settings.KERNEL_PACKAGES, *settings.ENGINE_PACKAGES, "course_mutation")  # linked into a course_copy
CRASH = "import os\nos._exit(1)  # the kernel dies here\n"
HANG = "while True:  # an infinite loop\n    pass\n"


@dataclass
class Plan:
    """What one demo student did, so the tests know which points each should get."""

    student: str
    variants: dict[str, tuple[Variant, ...]] = field(default_factory=dict)  # notebook -> its replaced solutions
    stop: tuple[str, str] | None = None  # (notebook, solution grade_id) where the kernel dies or hangs
    how: str = ""  # "crash" / "hang" / "delete" / "paste" / "copy" (COPIED says whose and what)
    tampered: tuple[str, str] | None = None  # (notebook, test grade_id) deleted or pasted twice


@dataclass(frozen=True)
class Copied(Variant):
    """Another student's variant, copied and disguised (the copier's): it loses the points the original loses."""

    of: Variant | None = None

    def source(self, reference: str) -> str:
        return disguise(self.of.source(reference))


def question(name: str) -> str:
    """`Q4_nn_batchnorm` -> `Q4`."""
    return name.split("_", 1)[0]


def reference_code(source: str) -> str:
    """A source solution cell without nbgrader's solution markers."""
    return "\n".join(line for line in source.splitlines()
                     if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


def _cells(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id")}


def _kind(cell: nbformat.NotebookNode) -> str:
    meta = cell.metadata.get("nbgrader", {})
    if meta.get("solution"):
        return "solution" if cell.cell_type == "code" else "answer"
    return "test" if meta.get("grade") else "other"


def stop_cell(source: Path) -> str:
    """The solution cell where crasher/looper stop: the last one with a test cell before it, else the first."""
    nb = nbformat.read(source, as_version=4)
    seen_test, chosen, first = False, None, None
    for cell in nb.cells:
        kind = _kind(cell)
        if kind == "test":
            seen_test = True
        elif kind == "solution":
            first = first or cell.metadata.nbgrader["grade_id"]
            if seen_test:
                chosen = cell.metadata.nbgrader["grade_id"]
    return chosen or first


def plans(names: list[str], stoppable: list[str], tested: list[str]) -> list[Plan]:
    """The demo class for these notebooks (sorted names like Q4_nn_batchnorm).

    `stoppable`: notebooks with a solution code cell (where a kernel can die or hang); `tested`: notebooks
    with an autograded test cell (one can be deleted or pasted twice).
    """
    out = [Plan("reference"), Plan("blank", how="blank")]
    for student in REALISTIC:
        plan = Plan(student)
        for name in names:
            chosen = CHOICES[student].get(question(name), ())
            chosen = (chosen,) if isinstance(chosen, str) else chosen
            if chosen:
                plan.variants[name] = tuple(find(question(name), one) for one in chosen)
                cells = [v.solution for v in plan.variants[name]]
                if len(set(cells)) != len(cells):
                    raise ValueError(f"{student}/{name}: two variants replace the same solution cell ({cells})")
        out.append(plan)
    crash_nb, hang_nb = stoppable[-1], stoppable[0]
    out.append(Plan("crasher", stop=(crash_nb, ""), how="crash"))
    out.append(Plan("looper", stop=(hang_nb, ""), how="hang"))
    out.append(Plan("deleter", how="delete", tampered=(tested[-1], "")))
    out.append(Plan("paster", how="paste", tampered=(tested[-1], "")))
    victim, copied = COPIED
    source = next(plan for plan in out if plan.student == victim)
    copier = Plan("copier", how="copy")
    for name in names:
        if question(name) in copied and name in source.variants:
            copier.variants[name] = tuple(Copied(f"{v.name}, copied from {victim}", v.solution, v.mistake, v.fails,
                                                 v.names, v.says, of=v) for v in source.variants[name])
    out.append(copier)
    return out


_SYNONYMS = {"mean": "mu", "var": "sigma2", "std": "sd", "flat": "flattened", "out": "result", "x": "inp",
             "grouped": "g", "shape": "view_shape", "n": "count", "c": "chans", "unbiased": "var_unbiased"}


def _dotted(node: ast.AST) -> str | None:
    """`self.means` -> "self.means", `x` -> "x"; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _independent(first: ast.stmt, second: ast.stmt) -> bool:
    """Two assignments to local names that can change places: neither reads or writes what the other writes, and
    no in-place call (an attribute's assignment stays: the order of a module's parameters is behaviour)."""
    if not (isinstance(first, ast.Assign) and isinstance(second, ast.Assign)):
        return False
    if any(isinstance(n, (ast.Attribute, ast.Subscript)) for stmt in (first, second) for target in stmt.targets
           for n in ast.walk(target)):
        return False

    def names(stmt: ast.Assign) -> tuple[set[str], set[str]]:  # (local names written, names and attributes read)
        written = {n.id for target in stmt.targets for n in ast.walk(target) if isinstance(n, ast.Name)}
        read = {_dotted(n) or "?" for n in ast.walk(stmt.value) if isinstance(n, (ast.Name, ast.Attribute))}
        return written, read

    def clash(a: set[str], b: set[str]) -> bool:
        return any(x == y or x.startswith(y + ".") or y.startswith(x + ".") or "?" in (x, y) for x in a for y in b)

    in_place = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr.endswith("_")
                   for stmt in (first, second) for n in ast.walk(stmt.value))
    (w1, r1), (w2, r2) = names(first), names(second)
    return not in_place and not clash(w1, r2) and not clash(w2, r1) and not clash(w1, w2)


def disguise(code: str) -> str:
    """What a student who copies does to hide it, in the copied code's own layout: every function's local variables
    renamed, and each pair of adjacent independent assignments (one line each) swapped. Same behaviour."""
    tree = ast.parse(code)
    lines = code.splitlines()
    spans = []  # (line, start col, end col, new name): a Name node's place in the text
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        params = {a.arg for a in (*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs,
                                  func.args.vararg, func.args.kwarg) if a is not None}
        local = {n.id for n in ast.walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} - params
        rename = {name: _SYNONYMS.get(name, f"{name}_") for name in local}
        spans += [(n.lineno - 1, n.col_offset, n.end_col_offset, rename[n.id]) for n in ast.walk(func)
                  if isinstance(n, ast.Name) and n.id in rename]
    swaps = []
    for node in ast.walk(tree):
        for attr in ("body", "orelse", "finalbody"):
            body = getattr(node, attr, None)
            i = 0
            while isinstance(body, list) and i + 1 < len(body):
                a, b = body[i], body[i + 1]
                if a.lineno == a.end_lineno and b.lineno == a.lineno + 1 == b.end_lineno and _independent(a, b):
                    swaps.append(a.lineno - 1)
                    i += 2
                else:
                    i += 1
    for line, start, end, new in sorted(set(spans), reverse=True):  # right to left: earlier columns stay valid
        lines[line] = lines[line][:start] + new + lines[line][end:]
    for line in swaps:
        lines[line], lines[line + 1] = lines[line + 1], lines[line]
    out = "\n".join(lines) + "\n"
    ast.parse(out)
    return out


def _last_test(nb: nbformat.NotebookNode) -> str:
    return [c.metadata.nbgrader["grade_id"] for c in nb.cells if _kind(c) == "test"][-1]


def solve(release: nbformat.NotebookNode, source: nbformat.NotebookNode,
          variants: Variant | tuple[Variant, ...] | None = (), student: str = "reference") -> None:
    """Fill a release notebook's solution cells with the source's solutions (each variant's code in the cell it
    replaces: one variant, several, or None) and its written answers with the student's own text (demo_answers:
    never the mark scheme)."""
    solutions = _cells(source)
    variants = (variants,) if isinstance(variants, Variant) else tuple(variants or ())
    replaced = {v.solution: v for v in variants}
    for grade_id, cell in _cells(release).items():
        kind = _kind(cell)
        if kind == "solution":
            code = solutions[grade_id].source
            if grade_id in replaced:
                code = replaced[grade_id].source(code).strip("\n")
            cell.source = reference_code(code)
        elif kind == "answer":
            cell.source = demo_answers.answer(grade_id, student)


def write_student(plan: Plan, source_dir: Path, release_dir: Path, dest: Path) -> Plan:
    """Write one demo student's notebooks into dest (submitted/<student>/<assignment>/)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    names = sorted(p.stem for p in release_dir.glob("*.ipynb"))
    for name in names:
        release = nbformat.read(release_dir / f"{name}.ipynb", as_version=4)
        if plan.how == "blank":
            nbformat.write(release, dest / f"{name}.ipynb")
            continue
        solve(release, nbformat.read(source_dir / f"{name}.ipynb", as_version=4), plan.variants.get(name, ()),
              plan.student)
        if plan.stop and plan.stop[0] == name:
            grade_id = stop_cell(source_dir / f"{name}.ipynb")
            plan.stop = (name, grade_id)
            cell = _cells(release)[grade_id]
            cell.source += "\n" + (CRASH if plan.how == "crash" else HANG)
        if plan.tampered and plan.tampered[0] == name:
            test_id = _last_test(release)
            plan.tampered = (name, test_id)
            index = next(i for i, c in enumerate(release.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == test_id)
            if plan.how == "delete":
                del release.cells[index]
            else:
                copy = nbformat.from_dict(release.cells[index])
                copy.id = copy.id[:8] + "dup0"
                release.cells.insert(index + 1, copy)
        nbformat.write(release, dest / f"{name}.ipynb")
    return plan


def build(root: Path, submitted: Path) -> list[Plan]:
    """Generate the whole demo class into submitted/ (replacing the demo students' folders only)."""
    release_dir = root / "release" / ASSIGNMENT
    names = sorted(p.stem for p in release_dir.glob("*.ipynb"))
    if not names:
        raise FileNotFoundError(f"no notebooks in {release_dir}: build the release first (make release)")
    source = root / "source" / ASSIGNMENT
    notebooks = {n: nbformat.read(source / f"{n}.ipynb", as_version=4) for n in names}
    stoppable = [n for n in names if any(_kind(c) == "solution" for c in notebooks[n].cells)]
    tested = [n for n in names if any(_kind(c) == "test" for c in notebooks[n].cells)]
    if not stoppable or not tested:
        raise ValueError("the demo class needs a notebook with a solution code cell and one with a test cell")
    done = []
    for plan in plans(names, stoppable, tested):
        done.append(write_student(plan, root / "source" / ASSIGNMENT, release_dir, submitted / plan.student / ASSIGNMENT))
    return done


def course_copy(base: Path, root: Path) -> Path:
    """A throw-away course under base: root's source/, config and packages, and a fresh release/.

    The tests and the benchmark grade in it so that they never touch the real course's gradebook.
    """
    from course_grader import gradebook

    course = base / "course"
    course.mkdir()
    shutil.copytree(root / "source", course / "source")
    shutil.copy(root / "nbgrader_config.py", course)
    for package in PACKAGES:
        (course / package).symlink_to(root / package)
    gradebook.record_assignment(course, f"sqlite:///{base / 'release.db'}", release_dir=course / "release")
    return course


def main(argv: list[str] | None = None) -> None:
    """`python -m course_mutation.demo [--root DIR]`: write the demo class into DIR/submitted/."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m course_mutation.demo", description=main.__doc__)
    p.add_argument("--root", type=Path, default=Path.cwd(), help="course root (default: the current folder)")
    root = p.parse_args(argv).root.resolve()
    try:
        done = build(root, root / "submitted")
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from None
    print(f"demo class: {len(done)} students in {root / 'submitted'} ({', '.join(plan.student for plan in done)})")


if __name__ == "__main__":
    main()

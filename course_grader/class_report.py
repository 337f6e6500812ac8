"""What the class got wrong: report.html and report.csv beside grades.csv, for the instructor only.

Built from what grading leaves behind, so it can be rebuilt at any time (`python -m course_grader --report`):
  - the gradebook: every student's points per test cell and per written answer, and which answers wait for
    manual grading;
  - the autograded notebooks: the judge's verdicts as data in their metadata (judging.VERDICTS_KEY), which say
    which catalogued mistake a failed test's output matched, by its id in course_lib.mistakes; the report groups
    students by id and shows the catalogue's sentence. Never the verdict's text: it quotes the student's own
    exception messages, so a student could write the sentence that names a mistake;
  - grades.csv: each student's status and the reasons they need attention (not graded, a kernel that died,
    tampering, pending manual grading);
  - reviews.json (reviews.py): the notebooks held for review, with the findings quoted and the commands that
    decide them, and the decisions already taken;
  - the autograded notebooks' solution code (the student's), for the similarity section (similarity.py): the pairs of students whose
    code resembles each other beyond what the release and the model solution hold, ranked, with the matching lines
    side by side. A reason to look, never a verdict: the page says so, and nothing in it changes a score.

The page has, per question, the distribution of the autograded points (one PNG made with matplotlib, embedded,
so the file works offline and can be mailed); per test its pass rate (a test nobody passes is flagged: the test
or the stub may be wrong); per named mistake how many students made it and which; the students who need
attention and why; the written answers still to grade; the similar solutions. report.csv holds the same numbers, a row each.
"""

from __future__ import annotations

import base64
import csv
import io
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from course_grader import inert, similarity
from course_grader.autograde import ASSIGNMENT
from course_grader.report import decide_commands, question
from course_grader.reviews import Reviews
from course_lib.mistakes import MISTAKES

# Where the judge's verdicts are in an autograded notebook's metadata (judging.VERDICTS_KEY). Copied, not imported:
# judging imports torch, which this module never needs; tests/test_verdict_data.py fails if they drift apart.
VERDICTS_KEY = "course_verdicts"


@dataclass
class TestStats:
    notebook: str
    test: str
    points: float
    graded: list[str] = field(default_factory=list)  # students with a score for it
    passed: list[str] = field(default_factory=list)  # full points
    mistakes: dict[str, list[str]] = field(default_factory=dict)  # named mistake's id -> students
    unnamed: list[str] = field(default_factory=list)  # failed without a named mistake

    @property
    def rate(self) -> float:
        return len(self.passed) / len(self.graded) if self.graded else 0.0


@dataclass
class Written:
    notebook: str
    answer: str
    points: float
    pending: list[str] = field(default_factory=list)  # students whose answer waits for manual grading
    graded: list[str] = field(default_factory=list)  # students whose answer has a manual score


@dataclass
class Review:
    """A notebook the audit was unsure of: its findings (inert text), held or decided, and the commands to decide."""

    student: str
    notebook: str
    findings: list[str]
    status: str  # "held", "cleared" or "confirmed"
    decided: str = ""

    @property
    def commands(self) -> tuple[str, str]:
        return decide_commands(self.student, question(self.notebook))


@dataclass
class ClassReport:
    students: list[str]
    statuses: dict[str, tuple[str, list[str]]]  # student -> (status, reasons), from grades.csv
    scores: dict[str, dict[str, float]]  # notebook -> {student: autograded points}
    max_points: dict[str, float]  # notebook -> autograded points available
    tests: list[TestStats]
    written: list[Written]
    reviews: list[Review] = field(default_factory=list)
    similar: similarity.Similarity | None = None  # write() adds it

    @property
    def held(self) -> list[Review]:
        return [r for r in self.reviews if r.status == "held"]

    @property
    def attention(self) -> list[tuple[str, str, list[str]]]:
        return [(s, status, reasons) for s, (status, reasons) in self.statuses.items() if status != "ok"]

    @property
    def named(self) -> list[tuple[TestStats, str, list[str]]]:
        """(test, the mistake's sentence, students), the most common first."""
        found = [(t, MISTAKES[m], s) for t in self.tests for m, s in t.mistakes.items()]
        return sorted(found, key=lambda x: (-len(x[2]), x[0].notebook, x[0].test, x[1]))


def mistakes_named(path: Path) -> dict[str, str]:
    """{test grade_id: the id of the catalogued mistake the judge named} for the failed tests of one autograded
    notebook, from the judge's verdict data (judging.VERDICTS_KEY). A notebook without it (graded before verdicts
    were data, or unreadable) names none, nor one whose data is not a catalogue id (graded before mistakes had
    ids): its failures count as unnamed, and a regrade names them."""
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return {}
    data = nb.metadata.get(VERDICTS_KEY)
    out = {}
    for verdict in data if isinstance(data, list) else []:
        if not isinstance(verdict, dict) or verdict.get("passed") is not False:
            continue
        test, mistake = verdict.get("grade_id"), verdict.get("mistake")
        if isinstance(test, str) and isinstance(mistake, str) and mistake in MISTAKES:
            out[test] = mistake
    return out


def _statuses(grades_csv: Path, students: list[str]) -> dict[str, tuple[str, list[str]]]:
    """student -> (status, reasons) from grades.csv, whose cells are inert (report.csv_line): a student is found
    by the cell written for them, and the reasons lose the formula guard (report.csv and the page add their own)."""
    rows = {}
    if grades_csv.exists():
        with open(grades_csv, newline="") as f:
            for row in csv.DictReader(f):
                reasons = [r for r in inert.csv_text(row.get("reasons") or "").split("; ") if r]
                rows[row.get("student") or ""] = (row.get("status") or "ok", reasons)
    return {s: rows.get(inert.csv_cell(s), ("ok", [])) for s in students}


def _not_graded(reasons: list[str]) -> set[str]:
    """The questions grades.csv says were not graded ("not graded: Q4: <cause>")."""
    return {r.split(": ", 2)[1] for r in reasons if r.startswith("not graded: ") and r.count(": ") >= 2}


def paths(grades_csv: Path) -> tuple[Path, Path]:
    """report.html and report.csv beside grades.csv (beside other.csv: other-report.html, other-report.csv)."""
    stem = "report" if grades_csv.name == "grades.csv" else f"{grades_csv.stem}-report"
    return grades_csv.with_name(f"{stem}.html"), grades_csv.with_name(f"{stem}.csv")


def collect(root: Path, db_url: str, grades_csv: Path) -> ClassReport:
    """The report's numbers for every student with a submission in the gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    tests: dict[tuple[str, str], TestStats] = {}
    written: dict[tuple[str, str], Written] = {}
    scores: dict[str, dict[str, float]] = {}
    max_points: dict[str, float] = {}
    with Gradebook(db_url) as gb:
        students = sorted(s.id for s in gb.students)
        statuses = _statuses(grades_csv, students)
        assignment = gb.find_assignment(ASSIGNMENT)
        notebooks = sorted(nb.name for nb in assignment.notebooks)
        for nb in assignment.notebooks:  # every test and answer, in notebook order, whoever was graded
            for cell in sorted(nb.grade_cells, key=lambda c: c.name):
                if cell.cell_type == "code":
                    tests[(nb.name, cell.name)] = TestStats(nb.name, cell.name, float(cell.max_score))
                else:
                    written[(nb.name, cell.name)] = Written(nb.name, cell.name, float(cell.max_score))
            max_points[nb.name] = float(sum(c.max_score for c in nb.grade_cells if c.cell_type == "code"))
        graded_students = []
        for student in students:
            try:
                submission = gb.find_submission(ASSIGNMENT, student)
            except MissingEntry:
                continue
            graded_students.append(student)
            left_out = _not_graded(statuses[student][1])
            for nb in submission.notebooks:
                if question(nb.name) in left_out:  # the grader could not grade it: no score to count
                    continue
                graded_path = root / "autograded" / student / ASSIGNMENT / f"{nb.name}.ipynb"
                if not graded_path.exists() and all(g.auto_score is None for g in nb.grades):
                    continue  # never autograded (a run of other notebooks); a notebook not submitted has zeros
                named = mistakes_named(graded_path)
                auto = 0.0
                for grade in nb.grades:
                    if grade.cell_type == "code":
                        stats = tests[(nb.name, grade.name)]
                        score = float(grade.score)
                        auto += score
                        stats.graded.append(student)
                        if score >= stats.points:
                            stats.passed.append(student)
                        elif grade.name in named:
                            stats.mistakes.setdefault(named[grade.name], []).append(student)
                        else:
                            stats.unnamed.append(student)
                    else:
                        answer = written[(nb.name, grade.name)]
                        if grade.needs_manual_grade:
                            answer.pending.append(student)
                        elif grade.manual_score is not None:
                            answer.graded.append(student)
                scores.setdefault(nb.name, {})[student] = auto
    order = {name: i for i, name in enumerate(notebooks)}
    held = [Review(s, nb, [inert.plain(f) for f in h.findings], h.decision or "held", h.decided)
            for s, nb, h in Reviews.load(root).held()]
    return ClassReport(graded_students, {s: statuses[s] for s in graded_students}, scores, max_points,
                       sorted(tests.values(), key=lambda t: (order[t.notebook], t.test)),
                       sorted(written.values(), key=lambda w: (order[w.notebook], w.answer)), held)


def distribution_png(report: ClassReport) -> bytes:
    """Small multiples: per question, how many students got how many autograded points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in report.max_points if report.max_points[n] > 0]
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        values = list(report.scores.get(name, {}).values())
        top = report.max_points[name]
        edges = [x - 0.5 for x in range(int(top) + 2)]
        ax.hist(values, bins=edges, color="#4c72b0", edgecolor="white")
        ax.set_title(f"{question(name)} (of {top:g})", fontsize=10)
        ax.set_xlim(-0.5, top + 0.5)
        ax.tick_params(labelsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.yaxis.get_major_locator().set_params(integer=True)
    fig.supxlabel("autograded points", fontsize=9)
    fig.supylabel("students", fontsize=9)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Class report: {{ assignment }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 1rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; margin-bottom: 1.5rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.4rem; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f3f3f3; }
img { max-width: 100%; height: auto; }
.bar { background: #e8e8e8; height: 0.8rem; } .bar span { display: block; height: 100%; background: #55a868; }
.flag { color: #b00; font-weight: bold; } .muted { color: #6b6b6b; }
.sbs { display: grid; grid-template-columns: 1fr 1fr; gap: 0.5rem; }
.sbs pre { background: #f7f7f7; padding: 0.4rem; font-size: 0.78rem; white-space: pre-wrap; overflow-wrap: anywhere;
           margin: 0; } .who { font-weight: bold; } mark { background: #ffe08a; }
details { margin-bottom: 0.8rem; } summary { cursor: pointer; }
</style></head><body><main>
<h1>Class report: {{ assignment }}</h1>
<p>{{ report.students|length }} students with a submission; {{ not_graded }} not graded;
{{ report.held|length }} notebook(s) held for review; {{ report.attention|length }} need attention. Instructor only: the page names students and their mistakes.</p>

<h2>Held for review</h2>
<p class="muted">The audit found code it does not judge by itself. The notebook keeps its scores until you decide:
clear it (the scores stand) or confirm it (its autograded tests score 0). Run the command from the course root.</p>
{% if report.reviews %}<table><tr><th style="width:8rem">student</th><th style="width:4rem">question</th>
<th>what was found</th><th style="width:17rem">decision</th></tr>
{% for r in report.reviews %}<tr><td>{{ r.student }}</td><td>{{ r.notebook.split('_')[0] }}</td>
<td>{% for f in r.findings %}<code>{{ f }}</code>{% if not loop.last %}<br>{% endif %}{% endfor %}</td>
<td>{% if r.status == "held" %}<span class="flag">held</span><br>keep the scores: <code>{{ r.commands[0] }}</code>
<br>zero the tests: <code>{{ r.commands[1] }}</code>{% else %}{{ r.status }} {{ r.decided }}{% endif %}</td></tr>
{% endfor %}</table>{% else %}<p class="muted">Nothing.</p>{% endif %}

<h2>Students who need attention</h2>
{% if report.attention %}<table><tr><th style="width:9rem">student</th><th style="width:7rem">status</th><th>why</th></tr>
{% for student, status, reasons in report.attention %}<tr><td>{{ student }}</td><td>{{ status }}</td>
<td>{% for r in reasons %}{{ r }}{% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>{% endfor %}
</table>{% else %}<p class="muted">Nobody.</p>{% endif %}

<h2>Points per question</h2>
<img alt="Distribution of the autograded points per question" src="data:image/png;base64,{{ png }}">
<table><tr><th>question</th><th>of</th><th>mean</th><th>median</th><th>full marks</th><th>zero</th></tr>
{% for q in questions %}<tr><td>{{ q.name }}</td><td>{{ q.max }}</td><td>{{ q.mean }}</td><td>{{ q.median }}</td>
<td>{{ q.full }}</td><td>{{ q.zero }}</td></tr>{% endfor %}</table>

<h2>Pass rate per test</h2>
<table><tr><th style="width:5rem">question</th><th>test</th><th style="width:4rem">points</th>
<th style="width:7rem">passed</th><th style="width:8rem">pass rate</th></tr>
{% for t in report.tests %}<tr><td>{{ t.notebook.split('_')[0] }}</td><td>{{ t.test }}{% if t.graded and not t.passed %}
<br><span class="flag">nobody passed: check the test and the stub</span>{% endif %}</td><td>{{ '%g' % t.points }}</td>
<td>{{ t.passed|length }} / {{ t.graded|length }}</td>
<td><div class="bar"><span style="width:{{ (100 * t.rate)|round|int }}%"></span></div></td></tr>{% endfor %}</table>

<h2>Named mistakes</h2>
{% if report.named %}<table><tr><th style="width:11rem">test</th><th>mistake</th><th style="width:4rem">students</th>
<th style="width:12rem">who</th></tr>
{% for t, mistake, who in report.named %}<tr><td>{{ t.notebook.split('_')[0] }} {{ t.test }}</td><td>{{ mistake }}</td>
<td>{{ who|length }}</td><td>{{ who|join(', ') }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">No failed test matched a catalogued mistake.</p>{% endif %}

<h2 id="similar">Similar solutions</h2>
{% set sim = report.similar %}
<p><strong>A reason to look, not a verdict.</strong> Every correct layer here is a few lines with one right formula,
so honest students write alike; students may also have worked from the same lecture code or an allowed study group.
Read the matching lines, then ask the students.</p>
<p class="muted">{{ sim.students|length }} students' solution cells compared, question by question, with copydetect's
fingerprints: names count as one symbol, so renaming hides nothing, and a passage is at least {{ k }} characters of
that code. Not counted: {{ sim.boilerplate }}, and any passage more than a quarter of the class has. A question is
flagged when a pair shares at least {{ min_shared }} characters of it and that is at least {{ flag_pct }}% of each
one's own code. Pairs are ranked by their weight: per question the shared code times the smaller of those two
parts, summed. The median pair of students weighs {{ '%g' % sim.median }}.</p>
{% if sim.notes %}<p class="muted">Not compared in full: {{ sim.notes|join('; ') }}.</p>{% endif %}
{% if sim.pairs %}<table><tr><th style="width:3rem">rank</th><th style="width:12rem">students</th>
<th style="width:4rem">weight</th><th>per question: shared characters (part of each one's own code)</th></tr>
{% for p in sim.pairs[:shown_rows] %}<tr><td>{{ loop.index }}</td><td>{{ p.a }} and {{ p.b }}{% if p.flagged %}
<br><span class="flag">flagged: {{ p.flagged|map(attribute='notebook')|map('question')|join(', ') }}</span>{% endif %}</td>
<td>{{ p.weight|round|int }}</td><td>{% for m in p.matches %}{{ m.notebook.split('_')[0] }} {{ m.shared }}
({{ (100 * m.fractions[0])|round|int }}% / {{ (100 * m.fractions[1])|round|int }}%){% if not loop.last %}; {% endif %}
{% endfor %}</td></tr>{% endfor %}</table>
{% if sim.pairs|length > shown_rows %}<p class="muted">{{ sim.pairs|length - shown_rows }} more pairs share a
passage: see report.csv.</p>{% endif %}
{% for p in sim.pairs[:shown_code] %}<details{% if p.flagged %} open{% endif %}><summary>{{ loop.index }}. {{ p.a }} and
{{ p.b }}: the matching passages, marked</summary>
{% for m in p.matches %}<h3>{{ m.notebook.split('_')[0] }}</h3><div class="sbs">
<pre aria-label="{{ p.a }}"><span class="who">{{ p.a }}</span>
{{ m.marked[0]|safe }}</pre><pre aria-label="{{ p.b }}"><span class="who">{{ p.b }}</span>
{{ m.marked[1]|safe }}</pre></div>{% endfor %}</details>{% endfor %}
{% else %}<p class="muted">No two students share code beyond what is not counted.</p>{% endif %}

<h2>Written answers to grade</h2>
<table><tr><th style="width:5rem">question</th><th>answer</th><th style="width:4rem">points</th>
<th style="width:5rem">to grade</th><th style="width:5rem">graded</th></tr>
{% for w in report.written %}<tr><td>{{ w.notebook.split('_')[0] }}</td><td>{{ w.answer }}</td><td>{{ '%g' % w.points }}</td>
<td>{{ w.pending|length }}</td><td>{{ w.graded|length }}</td></tr>{% endfor %}</table>
<p class="muted">Grade them in formgrader (<code>make lab</code>, then Nbgrader, Manage Assignments).
Built in {{ '%.1f' % seconds }} s.</p>
</main></body></html>
"""


def _questions(report: ClassReport) -> list[dict]:
    out = []
    for name, top in report.max_points.items():
        values = list(report.scores.get(name, {}).values())
        out.append(dict(name=question(name), max=f"{top:g}",
                        mean=f"{statistics.fmean(values):.1f}" if values else "-",
                        median=f"{statistics.median(values):g}" if values else "-",
                        full=sum(v >= top for v in values), zero=sum(v == 0 for v in values)))
    return out


def rows(report: ClassReport) -> list[list]:
    """report.csv: section, question, item, detail, count, of, students."""
    out = [["section", "question", "item", "detail", "count", "of", "students"]]
    for name, top in report.max_points.items():
        values = report.scores.get(name, {})
        for points in sorted({round(v) for v in values.values()}):  # the histogram's bars (points rounded)
            who = sorted(s for s, v in values.items() if round(v) == points)
            out.append(["points", question(name), f"{points}", f"of {top:g}", len(who), len(values), " ".join(who)])
    for t in report.tests:
        out.append(["test", question(t.notebook), t.test, "passed", len(t.passed), len(t.graded), " ".join(t.passed)])
    for t, mistake, who in report.named:
        out.append(["mistake", question(t.notebook), t.test, mistake, len(who), len(t.graded), " ".join(who)])
    for t in report.tests:
        if t.unnamed:
            out.append(["mistake", question(t.notebook), t.test, "(no named mistake)", len(t.unnamed), len(t.graded),
                        " ".join(t.unnamed)])
    for student, status, reasons in report.attention:
        out.append(["attention", "", student, status, len(reasons), "", "; ".join(reasons)])
    for r in report.reviews:  # one row per finding; a held one says how to decide it
        how = f"held: {r.commands[0]} | {r.commands[1]}" if r.status == "held" else f"{r.status} {r.decided}"
        out += [["review", question(r.notebook), r.student, how, len(r.findings), "", finding] for finding in r.findings]
    for w in report.written:
        out.append(["written", question(w.notebook), w.answer, "to grade", len(w.pending),
                    len(w.pending) + len(w.graded), " ".join(w.pending)])
    if report.similar:  # a row per pair and question: rank, the parts of each one's own code, shared characters,
        for rank, p in enumerate(report.similar.pairs, 1):  # the pair's weight
            out += [["similarity", question(m.notebook), f"{rank}", f"{m.fractions[0]:.2f} / {m.fractions[1]:.2f}"
                     + (" flagged" if m.flagged else ""), m.shared, round(p.weight), f"{p.a} {p.b}"]
                    for m in p.matches]
    return out


def similar_line(csv_path: Path) -> str:
    """One line for the terminal from report.csv: the pairs with a flagged question, or "" (none, or no report)."""
    flagged: dict[str, list[str]] = {}
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("section") == "similarity" and row.get("detail", "").endswith("flagged"):
                    pair = " and ".join(inert.plain(inert.csv_text(s), 80) for s in row["students"].split(" ", 1))
                    flagged.setdefault(pair, []).append(inert.plain(row["question"], 10))
    if not flagged:
        return ""
    pairs = "; ".join(f"{pair} ({', '.join(qs)})" for pair, qs in list(flagged.items())[:5])
    more = f" and {len(flagged) - 5} more" if len(flagged) > 5 else ""
    return f"similar solutions to look at (a reason to look, not a verdict): {pairs}{more}"


def write(root: Path, db_url: str, grades_csv: Path) -> tuple[Path, Path, float]:
    """Write report.html and report.csv beside grades.csv (paths); (html, csv, seconds it took)."""
    import jinja2

    started = time.monotonic()
    report = collect(root, db_url, grades_csv)
    try:
        report.similar = similarity.collect(root, report.students)
    except Exception as exc:  # noqa: BLE001 - the rest of the report still stands; the page says why this part is not
        report.similar = similarity.Similarity([], [], 0.0, "-", [f"not computed: {type(exc).__name__}: "
                                                                 f"{inert.plain(str(exc))}"])
    html_path, csv_path = paths(grades_csv)
    png = base64.b64encode(distribution_png(report)).decode()
    not_graded = sum(status == "not graded" for status, _ in report.statuses.values())
    env = jinja2.Environment(autoescape=True)
    env.filters["question"] = question
    html_path.write_text(env.from_string(PAGE).render(
        assignment=ASSIGNMENT, report=report, png=png, not_graded=not_graded, questions=_questions(report),
        k=similarity.K, min_shared=similarity.MIN_SHARED, flag_pct=round(100 * similarity.FLAG_FRACTION),
        shown_rows=similarity.SHOWN_ROWS, shown_code=similarity.SHOWN, seconds=time.monotonic() - started))
    with open(csv_path, "w", newline="") as f:  # text cells (students' quoted code among them) never formulas
        csv.writer(f).writerows(inert.csv_row(line) for line in rows(report))
    return html_path, csv_path, time.monotonic() - started

"""The course in a real browser: Debian's Chromium, driven by Playwright, uses JupyterLab as people do.

As a student (JupyterLab and the Validate kernel from the student environment, .venv-student/, serving a copy of
release/normalization/ with its nbgrader_config.py), pressing nbgrader's Validate button on Q8:
  - filled with the instructor's solutions: the dialog says "Success! Your notebook passes all the tests.";
  - with the mutation catalogue's unbiased-variance mistake: it fails, and the visible check
    `check_groupnorm(GroupNorm, "output")` names the mistake (unbiased variance);
  - untouched (the release stub): it fails with the stub's NotImplementedError, which names GroupNorm.
As an instructor (JupyterLab from .venv/ serving a copy of the course root, with a throw-away gradebook), the
Nbgrader > Formgrader menu opens the formgrader, whose Manage Assignments page lists "normalization" and shows
no warning (no banner about a missing exchange directory).

Every Validate dialog and the formgrader are saved as screenshots in test-artifacts/browser/, and the page is
saved there too (named after the test, path in the message) when a test fails. Nothing is downloaded: Chromium
comes from apt (installed when missing), Playwright only drives it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Browser, Page, expect

from browser_tools import ROOT, Lab, chromium_browser, screenshot, screenshot_on_failure, start_lab
from course_mutation.demo import solve
from course_mutation import find
from student_env import student_bin

ASSIGNMENT = "normalization"
NOTEBOOK = "Q8_groupnorm"
MISTAKE = "unbiased_variance"  # course_mutation's name for dividing by n - 1

# Milliseconds. Validate runs the whole notebook in a fresh kernel that imports torch and trains the lesson's
# CNN for an epoch on the grading subset (tens of seconds on a loaded 2-core machine); the rest is quick.
LOAD_MS = 90_000
VALIDATE_MS = 240_000
UI_MS = 15_000


# --------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def browser() -> Browser:
    """One headless Chromium (Debian's) for the whole module (browser_tools.chromium_browser)."""
    with chromium_browser() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Page:
    """A fresh browser context (no cookies, no storage) and page for each test."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(UI_MS)
    context.set_default_navigation_timeout(LOAD_MS)
    yield context.new_page()
    context.close()


def _write_student_notebooks(folder: Path) -> None:
    """The three Q8 notebooks the student tests open, in the copied release folder: Q8_stub (the release as a
    student first gets it), Q8_mistake (the solutions with one mistake) and Q8_groupnorm (the solutions)."""
    release = folder / f"{NOTEBOOK}.ipynb"
    source = nbformat.read(ROOT / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    shutil.copyfile(release, folder / "Q8_stub.ipynb")  # first: Q8_groupnorm.ipynb is overwritten below
    for name, variant in (("Q8_mistake", find("Q8", MISTAKE)), ("Q8_groupnorm", None)):
        notebook = nbformat.read(release, as_version=4)
        solve(notebook, source, variant)
        nbformat.write(notebook, folder / f"{name}.ipynb")


@pytest.fixture(scope="module")
def student_lab(tmp_path_factory) -> Lab:
    """The student's JupyterLab (.venv-student/) on a copy of release/normalization/, the folder a student
    works in: it is also the server's working folder, where Validate finds nbgrader_config.py."""
    base = tmp_path_factory.mktemp("browser-student")
    folder = base / ASSIGNMENT
    shutil.copytree(ROOT / "release" / ASSIGNMENT, folder)
    _write_student_notebooks(folder)
    bin_dir = student_bin()
    lab = start_lab(bin_dir, folder, base / "state")
    try:
        # The server runs on the student environment's Python, and so does the kernel Validate starts (the
        # kernelspec's "python" is the server's own interpreter).
        interpreter = Path(f"/proc/{lab.process.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        assert Path(interpreter).parent == bin_dir, f"the student JupyterLab runs on {interpreter}"
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def instructor_lab(tmp_path_factory) -> Lab:
    """The instructor's JupyterLab (.venv/) on a copy of the course root: nbgrader_config.py (which derives
    every path from its own location), source/ and release/, and a gradebook of its own."""
    base = tmp_path_factory.mktemp("browser-instructor")
    course = base / "course"
    course.mkdir()
    shutil.copyfile(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    for folder in ("source", "release", "exchange"):  # exchange/: the course-local one c.Exchange.root names
        shutil.copytree(ROOT / folder, course / folder)
    lab = start_lab(ROOT / ".venv" / "bin", course, base / "state", COURSE_DB_URL=f"sqlite:///{base / 'gradebook.db'}")
    yield lab
    lab.stop()


# ---------------------------------------------------------------------------------------------------- helpers

@dataclass
class Validation:
    """What the Validate dialog showed."""

    classes: str  # of #validation-message: validation-success, validation-failed, ...
    text: str  # the dialog body as the student reads it
    failed: list[tuple[str, str]]  # (the failing cell's source, its error) for each failing cell, in order

    @property
    def succeeded(self) -> bool:
        return "validation-success" in self.classes.split()

    def errors_of(self, code: str) -> list[str]:
        """The errors of the failing cells whose source contains code."""
        return [error for source, error in self.failed if code in source]


def validate(page: Page, lab: Lab, notebook: str, shot: str, show: str | None = None) -> Validation:
    """Open notebook in JupyterLab, press Validate, read the result dialog, save it as the screenshot `shot`
    (scrolled to the end of the error of the first failing cell whose source contains `show`, when given: the
    line that says what went wrong) and close it. nbgrader's button saves the notebook, then the server runs it
    in a new kernel."""
    # ?reset: a fresh workspace, so only this notebook is open (and only its kernel starts).
    page.goto(lab.url(f"lab/tree/{notebook}.ipynb", reset=""))
    panel = page.locator(".jp-NotebookPanel:visible")
    expect(panel).to_have_count(1, timeout=LOAD_MS)
    expect(panel.locator(".jp-Cell").first).to_be_visible(timeout=LOAD_MS)  # the notebook's model is loaded
    expect(page.locator(".jp-Dialog")).to_have_count(0)  # nothing (a kernel picker, an error) in the way
    # nbgrader's lab extension puts Validate in the notebook's toolbar, before the spacer: a <jp-button> of class
    # validate-button (aria-label "Validate", title "Validate Assignment"), its label in a span.
    button = panel.locator(".jp-NotebookPanel-toolbar jp-button.validate-button")
    expect(button).to_have_text("Validate", timeout=LOAD_MS)
    button.click()
    # While it runs the label reads "Saving..." then "Validating..."; the answer is a dialog.
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_be_visible(timeout=VALIDATE_MS)
    expect(dialog.locator(".jp-Dialog-header")).to_have_text("Validation Results")
    message = dialog.locator("#validation-message")
    # A failing cell is shown as "The following cell failed:", then two blocks: its source, then its error.
    blocks = message.locator(":scope > div.jp-RenderedText")
    texts = blocks.all_inner_texts()
    result = Validation(classes=message.get_attribute("class") or "", text=message.inner_text(),
                        failed=list(zip(texts[0::2], texts[1::2])))
    shown = [i for i, (source, _) in enumerate(result.failed) if show is not None and show in source]
    if shown:
        blocks.nth(2 * shown[0] + 1).evaluate("block => block.scrollIntoView({block: 'end'})")
    screenshot(page, shot)
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()  # OK
    expect(dialog).to_have_count(0)
    expect(button).to_have_text("Validate")
    return result


# ------------------------------------------------------------------------------------------------------ tests

def test_validate_says_success_for_a_correct_notebook(page, student_lab, request):
    with screenshot_on_failure(page, request.node.name):
        result = validate(page, student_lab, "Q8_groupnorm", "validate_success")
        assert result.succeeded, f"Validate did not pass the instructor's solution:\n{result.text}"
        assert "Success! Your notebook passes all the tests." in result.text, result.text


def test_validate_names_the_mistake(page, student_lab, request):
    with screenshot_on_failure(page, request.node.name):
        result = validate(page, student_lab, "Q8_mistake", "validate_mistake",
                          show='check_groupnorm(GroupNorm, "output")')
        assert not result.succeeded and "Success" not in result.text, result.text
        assert "validation-failed" in result.classes.split(), f"{result.classes}:\n{result.text}"
        # The visible check of the output test cell fails with a CheckFailed that names the mistake.
        errors = result.errors_of('check_groupnorm(GroupNorm, "output")')
        assert errors, ("the output test cell (check_groupnorm(GroupNorm, \"output\")) is not among the failing "
                        f"cells:\n{result.text}")
        assert "CheckFailed" in errors[0] and re.search(r"unbiased\s+variance", errors[0], re.IGNORECASE), (
            f"the output check's message does not name the unbiased variance:\n{errors[0]}")


def test_validate_names_the_unwritten_stub(page, student_lab, request):
    with screenshot_on_failure(page, request.node.name):
        result = validate(page, student_lab, "Q8_stub", "validate_stub", show="")  # "": the first failing cell
        assert not result.succeeded and "Success" not in result.text, result.text
        assert result.failed, f"no failing cell shown:\n{result.text}"
        errors = "\n".join(error for _, error in result.failed)
        assert "NotImplementedError" in errors and "GroupNorm" in errors, (
            f"the errors do not show the stub's NotImplementedError naming GroupNorm:\n{errors}")


def test_formgrader_lists_the_assignment(page, instructor_lab, request):
    with screenshot_on_failure(page, request.node.name):
        page.goto(instructor_lab.url("lab", reset=""))
        # The instructor's way in: JupyterLab's menu bar, Nbgrader > Formgrader (a tab framing /formgrader; the
        # next item, "Formgrader (local)", is the formgrader with a local config file).
        page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click(timeout=LOAD_MS)
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^\s*Formgrader\s*$")).click()
        formgrader = page.frame_locator("iframe[src*='formgrader']")
        rows = formgrader.locator("table tbody tr")
        expect(rows.filter(has_text=ASSIGNMENT).first).to_be_visible(timeout=LOAD_MS)
        names = [name.strip() for name in formgrader.locator("table tbody tr td:first-child").all_inner_texts()]
        assert ASSIGNMENT in names, f"the formgrader lists {names}"
        screenshot(page, "formgrader")
        # A course that hands notebooks out without nbgrader's exchange must not be told on every page that the
        # exchange directory is missing (the yellow banner); nbgrader_config.py points it at exchange/.
        warnings = formgrader.locator(".alert-warning:visible").all_inner_texts()
        assert not warnings, f"the formgrader shows warnings: {warnings}"


def test_the_students_lab_has_validate_and_no_instructor_tools(page, student_lab, request):
    """The student install turns off what nbgrader ships for instructors (formgrader, create assignment, the
    exchange's lists): its server has no formgrader, and the Nbgrader menu, if shown, offers none of it."""
    with screenshot_on_failure(page, request.node.name):
        response = page.goto(student_lab.url("formgrader"))
        assert response is not None and response.status == 404, f"the student's server serves /formgrader: {response}"
        page.goto(student_lab.url("lab", reset=""))
        expect(page.locator(".jp-LabShell")).to_be_visible(timeout=LOAD_MS)
        labels = page.locator(".lm-MenuBar-itemLabel").all_inner_texts()
        if "Nbgrader" in labels:
            page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
            items = page.locator(".lm-Menu-itemLabel").all_inner_texts()
            assert not [i for i in items if "Formgrader" in i or "Create" in i], f"the student's Nbgrader menu: {items}"

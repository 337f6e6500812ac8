"""A hostile student's work opened in a real browser (Debian's Chromium, driven by Playwright): nothing runs.

A submission carrying tests/hostile.py's `html-that-runs` payloads (script, event handlers, iframe, SVG, javascript:
links, remote images, CSS url(), stylesheet links, meta refresh, object, embed, form, in a markdown cell and in
HTML, SVG, JavaScript and markdown outputs) is graded through the real pipeline into a throw-away course. Then:
  - the instructor opens its autograded notebook in formgrader (the instructor's JupyterLab server from .venv/,
    serving that course with its gradebook: /formgrader/submissions/<id>/, the page Manual Grading opens);
  - the student's feedback page is opened from disk.
Each page must show the student's written answer (and, in formgrader, the HTML table output and the plot), and
no payload may have run: every payload that runs records its name in the page's global `pwned18` and sets the
title, every one that fetches asks a listener on 127.0.0.1 for its name (the test records every request the page
makes, and the listener every connection), a meta refresh would leave the page. Without the sanitiser
(course_grader/sanitise.py) both pages fail every one of these checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from browser_tools import ROOT, chromium_browser, screenshot, screenshot_on_failure, start_lab
from hostile import HARMLESS, HARMLESS_OUTPUT, MARK, build, corpus
from kernel_tools import Listener
from submissions import graded_class, notebook_name

STUDENT = "hostile-html"
LOAD_MS = 90_000
UI_MS = 15_000
SETTLE_MS = 2_000  # after the load event: time for handlers that fire late (SVG animations, ontoggle) to fire


@pytest.fixture(scope="module")
def browser() -> Browser:
    """One headless Chromium (Debian's) for the module, as in test_browser.py."""
    with chromium_browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def listener() -> Listener:
    listening = Listener()
    yield listening
    listening.stop()


@pytest.fixture(scope="module")
def graded(listener) -> Path:
    """The course folder after grading the hostile student (Q1, the instructor's solutions plus the payloads)."""
    attack = next(a for a in corpus(ROOT, ROOT, ROOT, listener.port) if a.name == "html-that-runs")
    seen = {}

    def make(release, source):
        seen["course"] = release.parent.parent
        return {STUDENT: (attack.notebook, build(attack, release, source))}

    with graded_class(make, "test-browser-hostile-") as (students, _, _):
        assert students[STUDENT].total == students[STUDENT].max_total, students[STUDENT]
        yield seen["course"]


@pytest.fixture(scope="module")
def instructor_lab(graded, tmp_path_factory):
    """The instructor's JupyterLab (.venv/) serving the graded course, with its gradebook."""
    lab = start_lab(ROOT / ".venv" / "bin", graded, tmp_path_factory.mktemp("browser-hostile") / "state",
                    COURSE_DB_URL=f"sqlite:///{graded / 'gradebook.db'}")
    yield lab
    lab.stop()


class Watched:
    """A fresh page whose requests (all of them, also frames') and dialogs are recorded; requests that would
    leave the machine are refused (no internet in CI), the others go through (the listener sees them)."""

    def __init__(self, browser: Browser) -> None:
        self.context = browser.new_context(viewport={"width": 1440, "height": 900})
        self.context.set_default_timeout(UI_MS)
        self.context.set_default_navigation_timeout(LOAD_MS)
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.page.on("dialog", self._dialog)

    def _route(self, route) -> None:
        url = route.request.url
        self.requests.append(url)
        local = url.startswith(("file:", "data:", "blob:", "about:")) or url.split("/")[2].split(":")[0] == "127.0.0.1"
        route.continue_() if local else route.abort()

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def watched(browser: Browser) -> Watched:
    w = Watched(browser)
    yield w
    w.context.close()


def assert_nothing_ran(w: Watched, url: str, title: str, listener: Listener) -> None:
    page = w.page
    page.wait_for_timeout(SETTLE_MS)
    ran = page.evaluate(f"() => window.{MARK} || []")
    assert ran == [], f"payloads ran: {ran}"
    assert page.title() == title, f"the title is {page.title()!r}"
    assert page.url == url, f"the page went to {page.url}"  # a meta refresh
    assert page.locator("[srcdoc], iframe, object, embed, form").count() == 0
    fetched = [r for r in w.requests if f":{listener.port}/" in r]
    assert fetched == [], f"the page fetched {fetched}"
    assert w.dialogs == [], w.dialogs
    assert listener.received == [], listener.received


def test_formgrader_shows_the_hostile_notebook_and_runs_none_of_it(watched, graded, instructor_lab, listener, request):
    from nbgrader.api import Gradebook

    name = notebook_name(graded, "Q1")
    with Gradebook(f"sqlite:///{graded / 'gradebook.db'}") as gb:
        submission = gb.find_submission_notebook(name, "normalization", STUDENT).id
    page = watched.page
    with screenshot_on_failure(page, request.node.name):
        url = instructor_lab.url(f"formgrader/submissions/{submission}/")
        page.goto(url, wait_until="load")

        expect(page.get_by_text(HARMLESS)).to_be_visible(timeout=LOAD_MS)
        expect(page.locator("td", has_text=HARMLESS_OUTPUT)).to_be_visible()  # the output (the code shows it too)
        assert page.locator("img[src^='data:image/png']").count() >= 1, "the plot is not shown"
        assert_nothing_ran(watched, url, name, listener)
        screenshot(page, "formgrader_hostile")


def test_the_feedback_page_shows_the_answer_and_runs_none_of_it(watched, graded, listener, request):
    name = notebook_name(graded, "Q1")
    path = graded / "feedback" / STUDENT / "normalization" / f"{name}.html"
    page = watched.page
    with screenshot_on_failure(page, request.node.name):
        url = path.as_uri()
        page.goto(url, wait_until="load")
        expect(page.get_by_text(HARMLESS)).to_be_visible(timeout=LOAD_MS)
        assert_nothing_ran(watched, url, name, listener)
        screenshot(page, "feedback_hostile")

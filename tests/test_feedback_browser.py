"""A student's feedback page, opened in Chromium with the network cut off (tests/browser_tools.py): it asks for
nothing outside the file, declares its language, shows its formulas as typeset MathML, and axe-core (Deque's
accessibility checker, from npm) finds no violation: headings, landmarks, colour contrast, link names. The instructor's
class report, with its similarity section, the same."""

from __future__ import annotations

import pytest

from browser_tools import chromium_browser, ensure_axe


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


def _page_with_math(course):
    for page in sorted((course / "feedback").rglob("*.html")):
        if "<math" in page.read_text():
            return page
    raise AssertionError("no feedback page of the demo class has math")


def _offline_page(browser, path):
    """The page opened with every request outside the file aborted; (context, page, what it asked the network)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []

    def offline(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", offline)
    page = context.new_page()
    page.goto(path.as_uri())
    return context, page, outside


def _axe(page) -> list[str]:
    page.add_script_tag(path=str(ensure_axe()))
    found = page.evaluate("axe.run(document, {resultTypes: ['violations']})")["violations"]
    return [f"{v['id']} ({v['impact']}): {v['help']}: {v['nodes'][0]['target']}" for v in found]


def test_a_feedback_page_works_offline_and_passes_axe(graded, course, browser):
    context, page, outside = _offline_page(browser, _page_with_math(course))
    assert outside == [], f"the page asked the network for {outside[:3]}"
    assert page.evaluate("document.documentElement.lang") == "en"
    widths = page.evaluate("[...document.querySelectorAll('math')].map(m => m.getBoundingClientRect().width)")
    assert widths and min(widths) > 0, "a formula is not typeset"
    assert "$\\" not in page.inner_text("body"), "TeX source is shown instead of a formula"
    said = _axe(page)
    assert not said, "\n".join(said)
    context.close()


def test_the_class_report_and_its_similar_solutions_work_offline_and_pass_axe(graded, course, browser):
    from course_grader import class_report

    context, page, outside = _offline_page(browser, class_report.paths(course / "grades.csv")[0])
    assert outside == [], f"the page asked the network for {outside[:3]}"
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.locator("details[open] mark").count() > 0, "the flagged pair's matching lines are not shown marked"
    said = _axe(page)
    assert not said, "\n".join(said)
    context.close()

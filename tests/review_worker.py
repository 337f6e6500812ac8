"""A grading worker whose judge also holds notebooks with given findings (the review tests' stand-in for the audit).

    python tests/review_worker.py FINDINGS.json --serve JOBS_FD REPLIES_FD

FINDINGS.json maps a notebook name (Q1_bn_learns_and_measures) to the findings to add to the judge's own
`review` for it. Everything else is the real worker (course_grader.autograde): the kernels, the judge, nbgrader,
the feedback. The audit fills `review` itself; this lets a test hold any notebook with any text, hostile included.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Patch the judge the worker's preprocessor calls, then serve jobs as the real worker does."""
    from course_grader.autograde import main as serve, skip_slow_imports

    skip_slow_imports()  # as the real worker, before nbformat is imported (by judging)
    import course_grader.judging as judging

    findings: dict[str, list[str]] = json.loads(Path(argv[0]).read_text())
    judge = judging.judge_notebook

    def with_findings(nb, release, notebook: str):
        judged = judge(nb, release, notebook)
        judged.review += findings.get(notebook, [])
        return judged

    judging.judge_notebook = with_findings
    return serve(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

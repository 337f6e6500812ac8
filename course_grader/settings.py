"""Every setting of the grading engine, declared here once (issue 21, item 2).

The CLI (`__main__`), the pipeline's `Options`, the worker's `Job`, the kernel's traits, the sandbox's launcher and
the Dask tasks all take their defaults from this module; `tests/test_course_layout.py` fails if a limit's literal
appears anywhere else in the engine. Where nbgrader has the setting, the course's `nbgrader_config.py` is the place
to change it, and `cell_timeout()` reads it from there (nbgrader's `c.Execute.timeout`).
"""

from __future__ import annotations

from pathlib import Path

# The nbgrader assignment every notebook belongs to (source/<ASSIGNMENT>/, release/<ASSIGNMENT>/, ...).
ASSIGNMENT = "normalization"
# What a grading kernel may import from the course (exposed read-only in its sandbox; preloaded by the fork server).
KERNEL_PACKAGES = ("course_lib", "course_recorder")
# What a Dask worker needs of the course's code besides them (shipped to workers that do not have it).
ENGINE_PACKAGES = ("course_judge", "course_grader")
# The release's cells that grading does not run when the student left them as given (kernel.RobustExecute._not_run):
# the instructor's demonstrations and experiments, which no test depends on (docs/AUTHORING.md). The autograded copy
# shows the outputs the student submitted for them. `--run-experiments` runs them.
SKIP_TAGS = ("demo", "experiment")
# How long the warm grading service (service.py, `--warm`) waits for its next run before it ends, in seconds.
WARM_IDLE = 900

# ---- limits on one student's kernel -------------------------------------------------------------------------------
CELL_TIMEOUT = 90  # seconds per cell, when nbgrader_config.py does not set c.Execute.timeout
VALIDATE_SLACK = 2  # a student's Validate allows this many times the grading cell limit (a slow or busy laptop)
NOTEBOOK_TIMEOUT = 600.0  # wall-clock seconds for the whole notebook
MEMORY_MB = 4096  # the kernel's memory (rlimit and cgroup)
SCRATCH_MB = 256  # the kernel's home, /tmp, /var/tmp and /dev/shm together (tmpfs)
WORKER_MEMORY_MB = 12288  # a grading worker's own memory limit (at least 3 x MEMORY_MB); 0: none
# Caps on what a kernel sends back, applied as it arrives (kernel.OutputBudget): one output, one cell's outputs,
# the notebook's outputs, one test cell's record bundles (counted apart, for the judge); and the largest notebook
# file that is read at all (repair.py).
MAX_OUTPUT_BYTES = 2 << 20
MAX_CELL_OUTPUT_BYTES = 4 << 20
MAX_NOTEBOOK_OUTPUT_BYTES = 16 << 20
MAX_RECORD_BYTES = 64 << 20
MAX_SUBMISSION_BYTES = 64 << 20


def cell_timeout(root: Path) -> int:
    """The per-cell limit: `c.Execute.timeout` in the course's nbgrader_config.py, else CELL_TIMEOUT."""
    from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

    try:
        config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    except ConfigFileNotFound:
        return CELL_TIMEOUT
    value = config.get("Execute", {}).get("timeout")
    return int(value) if isinstance(value, (int, float)) and value > 0 else CELL_TIMEOUT

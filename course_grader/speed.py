"""How slow this machine is right now, and the timeouts that only detect a dead or lost kernel, scaled by it.

Some of the grader's waits are not limits on the student (those are the cell and notebook limits) but guesses
of how long a healthy kernel can take to answer: nbclient waits 4 s for a cell's last output after the cell's
reply, jupyter_client 60 s for a new kernel to answer. On a busy machine a healthy kernel takes longer, and a
fixed guess then reads a slow kernel as a broken one. Each such wait here is its quiet-machine value times the
machine's measured slowness: a fixed piece of pure-Python work timed now against the time it takes on a quiet
core, so the factor follows both a slower machine and a loaded one (the work shares the cores with whatever
else runs).
"""

from __future__ import annotations

import math
import statistics
import time

# Seconds the calibration work takes on one quiet core of the reference machine (a 2-core cloud VM, 2026),
# measured with this code; a faster machine gets the factor 1, never less.
QUIET_SECONDS = 0.012
# The quiet-machine waits: nbclient's 4 s for a cell's last output, with a margin for a measurement taken a
# moment before the wait itself (the output of a big cell can lag its reply); jupyter_client's 60 s for a new
# kernel, itself a wide margin over the 1-3 s a kernel takes to start (and what a kernel that hangs at start
# costs per attempt).
IOPUB_SECONDS = 4.0
MARGIN = 3.0
STARTUP_SECONDS = 60.0
MAX_FACTOR = 100.0


clock = time.perf_counter  # the clock the calibration is timed with (a test stubs it)


def _work() -> float:
    started = clock()
    total = 0
    for i in range(200_000):
        total += i * i % 7
    return clock() - started


def slowness(samples: int = 5) -> float:
    """How many times slower than a quiet reference core this process runs now (at least 1)."""
    taken = statistics.median(_work() for _ in range(max(1, samples)))
    return min(MAX_FACTOR, max(1.0, taken / QUIET_SECONDS))


_last: tuple[float, float] | None = None  # (when, factor) of this process's last measurement (recent_slowness)


def recent_slowness(max_age: float = 10.0) -> float:
    """slowness(), measured again only when this process's last measurement is older than `max_age` seconds: a worker
    grading notebook after notebook measured 60 ms of work before each (about 4 % of a submission's worker time)."""
    global _last
    now = time.monotonic()
    if _last is None or now - _last[0] > max_age:
        _last = (now, slowness())
    return _last[1]


def iopub_timeout(factor: float) -> int:
    """Seconds to wait for a cell's last output after its reply before calling the kernel lost."""
    return math.ceil(IOPUB_SECONDS * MARGIN * factor)


def startup_timeout(factor: float) -> int:
    """Seconds a new kernel may take to answer its first request."""
    return math.ceil(STARTUP_SECONDS * factor)

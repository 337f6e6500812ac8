"""Test-wide settings: the course root is importable, grading mode is on, plots go nowhere."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("COURSE_GRADING_MODE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

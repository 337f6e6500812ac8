"""Q8 (GroupNorm): known-wrong implementations and correct alternatives."""

from course_grading.mutants import Variant

NOTEBOOK = "Q8"
VARIANTS = []

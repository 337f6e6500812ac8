"""Instructor-only grading code: hidden-test helpers, the mutation catalogue and harness.

Never shipped to students (release/ and course_lib hold no solutions or hidden tests). Hidden test
cells import it; autograde makes it importable by putting the course root on PYTHONPATH.
"""

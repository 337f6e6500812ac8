"""`make grade`: release -> demo class (or a real one) -> parallel, sandboxed autograde -> gradebook, feedback, grades.csv.

Modules: pipeline (orchestration), autograde (one student per worker), kernel (executor and kernel
manager), sandbox (kernel limits and isolation), repair (pre-grading checks), gradebook (record, merge,
read), demo (the demo class), report (table and CSV). docs/GRADING_PIPELINE.md explains the design.
"""

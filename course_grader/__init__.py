"""`make grade`: release -> demo class (or a real one) -> parallel, sandboxed autograde -> gradebook, feedback, grades.csv.

The grading engine; it runs in the grader's own processes only, never in a kernel. Modules: pipeline
(orchestration), autograde (one student per worker), schedule (which worker grades what), kernel (executor and
kernel manager), sandbox (each kernel's namespaces, view, user and limits), zygote (the fork server), judging
(the judge's verdicts into the test cells, the students' feedback copy), repair (pre-grading checks), gradebook
(record, merge, read), demo (the demo class), report (table and CSV). docs/GRADING_PIPELINE.md explains it.
"""

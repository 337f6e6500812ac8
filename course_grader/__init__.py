"""`make grade`: release -> a class (submitted/, where make grade puts the demo class) -> parallel, sandboxed autograde
-> gradebook, feedback, grades.csv.

The grading engine; it runs in the grader's own processes only, never in a kernel. Modules: pipeline
(orchestration), autograde (one student per worker), schedule (which worker grades what), kernel (executor and
kernel manager), sandbox (each kernel's namespaces, view, user and limits), zygote (the fork server), judging
(the judge's verdicts into the test cells, the students' feedback copy), repair (pre-grading checks), gradebook
(record, merge, read), report (table and CSV). docs/GRADING_PIPELINE.md explains it. The demo class is test
tooling (course_mutation.demo, built from the catalogue's complete solutions): the engine never imports it.
"""

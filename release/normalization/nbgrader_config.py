"""nbgrader settings for students: Validate (JupyterLab's button, or `nbgrader validate Qn_....ipynb` run
in this folder) reads this file. Written by tools/build_release.py from the course's own limit."""

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

# A per-cell limit: generous, so that Validate works on a slow or busy laptop (Validate uses the small
# grading subset of MNIST, as grading does).
c.Execute.timeout = 180

"""nbgrader settings for the course (https://nbgrader.readthedocs.io). Run nbgrader from this folder."""

import os

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

HERE = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.course_id = "normalization"
c.CourseDirectory.root = HERE
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
# The SQLite file is the embedded default; point COURSE_DB_URL at PostgreSQL on a course server.
db_url = os.environ.get("COURSE_DB_URL", "sqlite:///" + os.path.join(HERE, "gradebook.db"))
if db_url.startswith(("postgresql://", "postgres://")):  # SQLAlchemy 2.1 would look for psycopg 3
    db_url = "postgresql+psycopg2://" + db_url.split("://", 1)[1]
c.CourseDirectory.db_url = db_url

# The course hands out release/ and collects submissions by git or an LMS, not through nbgrader's exchange. The
# exchange is a folder of the course so that formgrader finds one (without it, every formgrader page warns that
# /srv/nbgrader/exchange could not be created); its release/collect buttons then work on this machine only.
c.Exchange.root = os.path.join(HERE, "exchange")

# Every student notebook opens with the course header (instructions, how to validate).
c.IncludeHeaderFooter.header = os.path.join(HERE, "source", "header.ipynb")

# A solution region becomes this stub; the surrounding signature and docstring stay.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# The per-cell limit when grading, in seconds: the grading engine reads it from here (course_grader/settings.py,
# where the whole-notebook, memory and output limits are declared); nbgrader's own commands use it too. Students'
# Validate gets settings.VALIDATE_SLACK times it (release/normalization/nbgrader_config.py).
c.Execute.timeout = 90

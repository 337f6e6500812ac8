# %% [markdown]
# # Normalization from the Foundations
#
# Nine short exercises built on the 2019 fast.ai lesson on batch normalization. Each notebook is
# graded automatically; a few written answers are read by your instructor.
#
# **How to work**
# - Run the notebook from the top (Kernel → Restart & Run All) before you start: the first cells load
#   MNIST and `course_lib`, the course's small training library.
# - Fill in every cell that says `YOUR CODE HERE` (delete the `raise NotImplementedError(...)` line) or
#   `YOUR ANSWER HERE`. Keep the names and signatures given in the stubs: the tests call them.
# - The cells after each stub check your work. Some checks are hidden and run only when your notebook
#   is graded, on other inputs: passing the visible checks is necessary, not sufficient.
# - Do not copy, delete or edit the test cells; when grading they are restored from the original.
# - Before you submit, press **Validate** (or run `nbgrader validate Qn_....ipynb`).
#
# When the notebook is graded, training runs on a fixed subset of MNIST (4,096 training and 1,024
# validation images) so that grading is quick; you train on the full data.

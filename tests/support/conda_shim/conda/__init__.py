"""Not conda: the two names conda-index 0.13.0 imports from it when it writes no current_repodata.json and
is not loaded as a conda plugin, `conda.models.version.VersionOrder` and `conda.base.constants.
PLATFORM_DIRECTORIES` (conda is not on PyPI). It is put on PYTHONPATH only for the subprocess that runs
tests/support/conda_index_runner.py, so it never shadows anything in the test process."""

SHIM = True

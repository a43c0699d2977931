"""Settings for Django's tests/tasks/ suite run against our backends.

As Django's own runtests.py with tests/test_sqlite.py, cut down to what
tests/tasks/ needs. The extracted Django tests/ folder is on PYTHONPATH, so
Django's test package imports as ``tasks`` (its tests check that task paths
are ``tasks.tasks.noop_task``), in this process and in the process backend's
spawned workers, which set Django up from this module too.

For the database-store runs (``thread-database``, ``process-database``) the
harness sets ``DJANGO_SUITE_STORE_DB`` to a SQLite file in a temporary folder
of its own: this module then adds our app and the ``tasks_store`` database
alias that the swapped backends keep their results in (suite_backends). The
memory-store runs leave it unset, and run on the settings above alone.
"""

import os

SECRET_KEY = "django_tests_secret_key"
USE_TZ = False
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "tasks",
]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3"},
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# Each test case names its backends with override_settings; the harness
# swaps Django's ImmediateBackend for ours (see suite_backends).
TASKS = {
    "default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
}

#: The database alias of the database store, in the database-store runs.
STORE_DATABASE = "tasks_store"
_store_file = os.environ.get("DJANGO_SUITE_STORE_DB")
if _store_file:
    INSTALLED_APPS.append("django_tasks_local")
    DATABASES[STORE_DATABASE] = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _store_file,
        # A file, not Django's in-memory test database: TEST NAME == NAME, so
        # the test runner creates (and migrates, and at the end removes) the
        # very file that the process backend's spawned workers, set up from
        # this module with the same environment, open too.
        "TEST": {"NAME": _store_file},
        # What the store's system checks require of SQLite (store_checks.py):
        # the runner runs those checks on the swapped backends too.
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }

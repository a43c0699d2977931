"""Settings for Django's tests/tasks/ suite run against our backends.

As Django's own runtests.py with tests/test_sqlite.py, cut down to what
tests/tasks/ needs. The extracted Django tests/ folder is on PYTHONPATH, so
Django's test package imports as ``tasks`` (its tests check that task paths
are ``tasks.tasks.noop_task``), in this process and in the process backend's
spawned workers, which set Django up from this module too.
"""

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

"""Settings for the test suite: SQLite by default, PostgreSQL as a second alias."""

import os
import tempfile
from pathlib import Path

SECRET_KEY = "django-tasks-local-tests"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "tests",
]

# Worker processes load these settings afresh, so the test databases are
# named here (not by the test runner at run time), from an id that spawned
# children inherit through the environment.
RUN_ID = os.environ.setdefault("DJANGO_TASKS_LOCAL_TEST_RUN", str(os.getpid()))
# A file, not :memory:, so that worker processes see the same database.
SQLITE_PATH = str(Path(tempfile.gettempdir()) / f"django-tasks-local-{RUN_ID}.sqlite3")
POSTGRES_NAME = f"test_django_tasks_local_{RUN_ID}"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": SQLITE_PATH,
        "TEST": {"NAME": SQLITE_PATH},
    },
    "postgres": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("POSTGRES_HOST", "127.0.0.1"),
        "PORT": os.environ.get("POSTGRES_PORT", "5432"),
        "USER": os.environ.get("POSTGRES_USER", "postgres"),
        "NAME": POSTGRES_NAME,
        "TEST": {"NAME": POSTGRES_NAME},
    },
}

TASKS = {
    "default": {"BACKEND": "django_tasks_local.ThreadPoolBackend"},
    "threads": {
        "BACKEND": "django_tasks_local.ThreadPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 4},
    },
    "processes": {
        "BACKEND": "django_tasks_local.ProcessPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 2},
    },
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

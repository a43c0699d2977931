"""Settings for the test suite: SQLite by default, PostgreSQL as a second alias."""

import os
import tempfile
from pathlib import Path

SECRET_KEY = "django-tasks-local-tests"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.messages",
    "django.contrib.sessions",
    "django_tasks_local",
    "tests",
]

# Worker processes load these settings afresh, so the test databases are
# named here (not by the test runner at run time), from an id that spawned
# children inherit through the environment.
RUN_ID = os.environ.setdefault("DJANGO_TASKS_LOCAL_TEST_RUN", str(os.getpid()))
# A file, not :memory:, so that worker processes see the same database.
SQLITE_PATH = str(Path(tempfile.gettempdir()) / f"django-tasks-local-{RUN_ID}.sqlite3")
POSTGRES_NAME = f"test_django_tasks_local_{RUN_ID}"
# The database stores under test have databases of their own, so that a test
# that empties "default" or "postgres" never takes their rows away.
STORE_SQLITE_PATH = str(
    Path(tempfile.gettempdir()) / f"django-tasks-local-{RUN_ID}-store.sqlite3"
)
STORE_POSTGRES_NAME = f"test_django_tasks_local_store_{RUN_ID}"
# As the durable store asks of SQLite (django_tasks_local.store_checks).
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
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
    "store_sqlite": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": STORE_SQLITE_PATH,
        "TEST": {"NAME": STORE_SQLITE_PATH},
        "OPTIONS": SQLITE_OPTIONS,
    },
    "store_postgres": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("POSTGRES_HOST", "127.0.0.1"),
        "PORT": os.environ.get("POSTGRES_PORT", "5432"),
        "USER": os.environ.get("POSTGRES_USER", "postgres"),
        "NAME": STORE_POSTGRES_NAME,
        "TEST": {"NAME": STORE_POSTGRES_NAME},
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
    # The same two on the database store, on SQLite and on PostgreSQL.
    "threads-sqlite": {
        "BACKEND": "django_tasks_local.ThreadPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 4, "STORE": "database", "DATABASE": "store_sqlite"},
    },
    "processes-sqlite": {
        "BACKEND": "django_tasks_local.ProcessPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 2, "STORE": "database", "DATABASE": "store_sqlite"},
    },
    "threads-postgres": {
        "BACKEND": "django_tasks_local.ThreadPoolBackend",
        "OPTIONS": {
            "MAX_WORKERS": 4,
            "STORE": "database",
            "DATABASE": "store_postgres",
        },
    },
    "processes-postgres": {
        "BACKEND": "django_tasks_local.ProcessPoolBackend",
        "OPTIONS": {
            "MAX_WORKERS": 2,
            "STORE": "database",
            "DATABASE": "store_postgres",
        },
    },
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# For the admin of the database store (tests/test_admin.py).
ROOT_URLCONF = "tests.urls"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

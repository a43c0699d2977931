"""Settings of the example project.

Which backend runs the jobs is chosen here alone, by one environment variable:

* ``DEMO_TASKS_BACKEND=local`` (the default): django-tasks-local's
  ``ThreadPoolBackend`` for I/O-bound jobs, ``ProcessPoolBackend`` for
  CPU-bound ones. Nothing else to run.
* ``DEMO_TASKS_BACKEND=immediate``: Django's ``ImmediateBackend`` runs each
  job inside the request that starts it.
* ``DEMO_TASKS_BACKEND=db``: django-tasks-db's ``DatabaseBackend`` stores jobs
  in the database, for ``manage.py db_worker --backend io`` (and ``cpu``) to run.
* ``DEMO_TASKS_BACKEND=durable``: the same pools as ``local``, with their
  results in the database (``OPTIONS["STORE"] = "database"``): every web
  process reads them, and the tasks a stopped server had not started run
  after it starts again. Made to be served by several processes
  (``make example`` runs gunicorn with 3 workers).

The code (tasks, views) is the same for all four. Progress is kept in each
task result's metadata, which only django-tasks-local's backends have: under
``immediate`` and ``db`` the jobs run the same, and the page shows no progress.
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
# The SQLite database lives here.
DATA_DIR = Path(os.environ.get("DEMO_DATA_DIR", BASE_DIR / "var"))
# SQLite creates its file but not the folder.
DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = "django-tasks-local-demo (not a secret: never deploy this project)"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

TASK_BACKEND_CHOICES = {
    "local": {
        "io": {
            "BACKEND": "django_tasks_local.ThreadPoolBackend",
            "OPTIONS": {"MAX_WORKERS": 4},
        },
        "cpu": {
            "BACKEND": "django_tasks_local.ProcessPoolBackend",
            "OPTIONS": {"MAX_WORKERS": 2},
        },
    },
    "immediate": {
        "io": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
        "cpu": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    },
    "db": {
        "io": {"BACKEND": "django_tasks_db.DatabaseBackend"},
        "cpu": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    },
    # Needs "django_tasks_local" in INSTALLED_APPS (below), and migrate.
    "durable": {
        "io": {
            "BACKEND": "django_tasks_local.ThreadPoolBackend",
            "OPTIONS": {"MAX_WORKERS": 4, "STORE": "database"},
        },
        "cpu": {
            "BACKEND": "django_tasks_local.ProcessPoolBackend",
            "OPTIONS": {"MAX_WORKERS": 2, "STORE": "database"},
        },
    },
}
TASK_BACKEND_CHOICE = os.environ.get("DEMO_TASKS_BACKEND", "local")
if TASK_BACKEND_CHOICE not in TASK_BACKEND_CHOICES:
    raise ImproperlyConfigured(
        f"DEMO_TASKS_BACKEND must be one of {', '.join(TASK_BACKEND_CHOICES)}, "
        f"not {TASK_BACKEND_CHOICE!r}."
    )
TASKS = TASK_BACKEND_CHOICES[TASK_BACKEND_CHOICE]

INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "jobs",
]
if TASK_BACKEND_CHOICE == "db":
    INSTALLED_APPS.append("django_tasks_db")
if TASK_BACKEND_CHOICE == "durable":
    # The database store's tables (and their admin, not used here).
    INSTALLED_APPS.append("django_tasks_local")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

ROOT_URLCONF = "demo.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": ["django.template.context_processors.request"]
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
        # Web processes, task workers and worker processes all write here:
        # WAL lets readers go on during a write, IMMEDIATE takes the write
        # lock up front, and the timeout waits for it rather than failing.
        # The database store requires these (its checks E006 to E008).
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    },
}

USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_tasks_local": {"handlers": ["console"], "level": "INFO"}},
}

"""Settings for the benchmarks (``benchmarks/run.py`` sets DJANGO_SETTINGS_MODULE to this)."""

SECRET_KEY = "django-tasks-local-benchmarks"
USE_TZ = True
INSTALLED_APPS: list[str] = []

# In memory: no benchmark touches the database, but a project always has one,
# and enqueue() asks its connection whether a transaction is open.
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}

# Each store keeps exactly the 20,000 results of the last throughput run, so
# every one of them can be checked, and get_result() is measured among 20,000.
MAX_RESULTS = 20_000

TASKS = {
    "default": {
        "BACKEND": "django_tasks_local.ThreadPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 4, "MAX_RESULTS": MAX_RESULTS},
    },
    "threads": {
        "BACKEND": "django_tasks_local.ThreadPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 4, "MAX_RESULTS": MAX_RESULTS},
    },
    # The same size as "processes", for the CPU-bound speed-up.
    "threads2": {
        "BACKEND": "django_tasks_local.ThreadPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 2, "MAX_RESULTS": MAX_RESULTS},
    },
    "processes": {
        "BACKEND": "django_tasks_local.ProcessPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 2, "MAX_RESULTS": MAX_RESULTS},
    },
    "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
}

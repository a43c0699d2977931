"""Settings of the gunicorn server that tests/test_concurrency.py starts.

The test settings (so the same test databases, named from the run id that the
server inherits through the environment), served by ``tests.server_urls``,
with every warning and error written to stderr, which the tests read. Only
the task aliases on databases the test run has set up are kept
(``SERVER_TASK_ALIASES``): a web process opens the database store of every
alias at its first request.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import TASKS

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "tests.server_urls"
MIDDLEWARE: list[str] = []

_served = os.environ.get("SERVER_TASK_ALIASES")
if _served is not None:
    TASKS = {
        alias: params
        for alias, params in TASKS.items()
        if alias == "default" or alias in _served.split(",")
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(process)d %(name)s %(levelname)s %(message)s"}
    },
    # WARNING and above: each task's start and end (INFO) would be noise.
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "level": "WARNING",
        }
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}

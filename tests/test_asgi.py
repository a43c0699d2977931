"""Servers stopped by SIGTERM or Ctrl-C give running tasks SHUTDOWN_TIMEOUT
(ASGI servers with ``close_on_shutdown``).

Each test runs a real server in a subprocess, on a tiny project written for
it, enqueues a task that runs for a second, and stops the server with SIGTERM
as a process manager would, or with SIGINT to its process group as Ctrl-C
does. gunicorn's own (sync) workers serve the WSGI application.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import DEADLINE, free_port, http_get

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

SETTINGS = """
SECRET_KEY = "asgi-tests"
USE_TZ = True
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["tests"]
ROOT_URLCONF = "asgi_urls"
DATABASES = {}
OPTIONS = {"MAX_WORKERS": 1, "SHUTDOWN_TIMEOUT": 30}
TASKS = {
    "default": {"BACKEND": "django_tasks_local.ThreadPoolBackend", "OPTIONS": OPTIONS},
    "processes": {"BACKEND": "django_tasks_local.ProcessPoolBackend", "OPTIONS": OPTIONS},
}
"""

URLS = """
import os
import time
from pathlib import Path

from django.http import HttpResponse
from django.urls import path

from tests.tasks import finish_in


def enqueue(request):
    marker = Path(os.environ["MARKER"])
    finish_in.using(backend=request.GET["backend"]).enqueue(1.0, str(marker))
    started = marker.with_suffix(".started")
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return HttpResponse("started" if started.exists() else "not started")


urlpatterns = [path("enqueue/", enqueue)]
"""

APPLICATION = """
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

from django_tasks_local.asgi import close_on_shutdown

application = close_on_shutdown(get_asgi_application())
unwrapped = get_asgi_application()
wsgi = get_wsgi_application()
"""


SERVERS = {
    "uvicorn": lambda port, app: [
        str(BIN / "uvicorn"),
        f"asgi_app:{app}",
        "--port",
        str(port),
    ],
    "gunicorn-uvicorn": lambda port, app: [
        str(BIN / "gunicorn"),
        "--worker-class",
        "uvicorn_worker.UvicornWorker",
        "--bind",
        f"127.0.0.1:{port}",
        f"asgi_app:{app}",
    ],
    "daphne": lambda port, app: [
        str(BIN / "daphne"),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        f"asgi_app:{app}",
    ],
    "gunicorn": lambda port, app: [
        str(BIN / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "asgi_app:wsgi",
    ],
    "hypercorn": lambda port, app: [
        str(BIN / "hypercorn"),
        "--bind",
        f"127.0.0.1:{port}",
        f"asgi_app:{app}",
    ],
}


def serve_and_stop(
    tmp_path: Path,
    server: str,
    app: str,
    backend: str,
    signum: signal.Signals = signal.SIGTERM,
) -> str:
    """Serve, enqueue a task that runs a second, signal the server; its output."""
    (tmp_path / "asgi_site.py").write_text(SETTINGS)
    (tmp_path / "asgi_urls.py").write_text(URLS)
    (tmp_path / "asgi_app.py").write_text(APPLICATION)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "asgi_site",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), str(REPO / "src")]),
        "MARKER": str(tmp_path / "marker"),
    }
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            SERVERS[server](port, app),
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + DEADLINE
            url = f"http://127.0.0.1:{port}/enqueue/?backend={backend}"
            assert http_get(url, deadline) == "started", log_path.read_text()
            # As a process manager stops a service (SIGTERM), or Ctrl-C in
            # a terminal (SIGINT to the process group).
            if signum == signal.SIGINT:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
            process.wait(timeout=DEADLINE)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=DEADLINE)
    return log_path.read_text()


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("backend", ["default", "processes"])
@pytest.mark.parametrize("server", sorted(SERVERS))
def test_a_stop_signal_lets_the_running_task_finish(tmp_path, server, backend, signame):
    signum = signal.Signals[signame]
    output = serve_and_stop(tmp_path, server, "application", backend, signum)
    # Written by the task a second after it started, after the signal.
    assert (tmp_path / "marker").read_text() == "finished", output


# What each server does unwrapped: does the exit hook run, so that the
# running task finishes? (docs/gotchas.md has this table.)
HOOK_RUNS_UNWRAPPED = {
    ("daphne", "SIGTERM"): True,
    ("daphne", "SIGINT"): True,
    ("uvicorn", "SIGTERM"): False,
    ("uvicorn", "SIGINT"): True,
    ("gunicorn-uvicorn", "SIGTERM"): False,
    ("gunicorn-uvicorn", "SIGINT"): False,
    ("hypercorn", "SIGTERM"): True,
    ("hypercorn", "SIGINT"): True,
    ("gunicorn", "SIGTERM"): True,
    ("gunicorn", "SIGINT"): True,
}


@pytest.mark.parametrize(("server", "signame"), sorted(HOOK_RUNS_UNWRAPPED))
def test_which_servers_run_the_exit_hook_unwrapped(tmp_path, server, signame):
    signum = signal.Signals[signame]
    output = serve_and_stop(tmp_path, server, "unwrapped", "default", signum)
    finished = (tmp_path / "marker").exists()
    assert finished == HOOK_RUNS_UNWRAPPED[server, signame], output

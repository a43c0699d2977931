"""The example project, started as a person would start it.

migrate, runserver, and for the database backend the db_worker commands,
with a data folder of its own and DEMO_TASKS_BACKEND: the only difference
between the backends is that setting. The durable setting is served as
deployments are, by gunicorn with several worker processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent.parent
# Generous: the machine is small and shared.
START_TIMEOUT = 60
# gunicorn's worker processes under DEMO_TASKS_BACKEND=durable.
GUNICORN_WORKERS = 3


@dataclass
class DemoServer:
    """The example project running under one DEMO_TASKS_BACKEND."""

    backend: str
    data_dir: Path
    url: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "demo.settings",
            "DEMO_TASKS_BACKEND": self.backend,
            "DEMO_DATA_DIR": str(self.data_dir),
            "PYTHONUNBUFFERED": "1",
            # gunicorn (25.1 and later) puts its control socket there: each
            # server its own.
            "XDG_RUNTIME_DIR": str(self.data_dir),
        }

    @property
    def multiprocess(self) -> bool:
        """Whether several processes serve the requests (gunicorn's workers)."""
        return self.backend == "durable"

    def manage(self, *args: str) -> list[str]:
        return [sys.executable, str(DEMO_DIR / "manage.py"), *args]

    def start(self) -> None:
        subprocess.run(
            self.manage("migrate", "--noinput", "-v0"),
            env=self.env,
            check=True,
            timeout=START_TIMEOUT,
        )
        self.url = f"http://127.0.0.1:{free_port()}/"
        self.start_server()
        if self.backend == "db":
            # django-tasks-db runs one backend alias per worker.
            for alias in ("io", "cpu"):
                self.launch(
                    f"db_worker-{alias}",
                    self.manage(
                        "db_worker",
                        f"--backend={alias}",
                        "--interval=0.1",
                        "--no-startup-delay",
                        "--no-reload",
                    ),
                )
        self.wait_until_serving()

    def start_server(self) -> None:
        """Start the web server (again, after stop_server) on the project's port."""
        bind = self.url.removeprefix("http://").rstrip("/")
        if self.multiprocess:
            command = [
                *(sys.executable, "-m", "gunicorn", "--chdir", str(DEMO_DIR)),
                *("--workers", str(GUNICORN_WORKERS), "--bind", bind),
                *("--access-logfile", "-", "--access-logformat", "%(r)s %(s)s %(p)s"),
                "demo.wsgi",
            ]
        else:
            command = self.manage("runserver", "--noreload", bind)
        self.launch("server", command)

    def stop_server(self) -> None:
        """Stop the web server as a process manager does: SIGTERM, then wait.

        gunicorn's master passes the signal on to its workers, and exits
        once they have.
        """
        server = self.processes["server"]
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=START_TIMEOUT)

    def launch(self, name: str, command: list[str]) -> None:
        # Appended to: a restarted server's log follows the first one's.
        log = (self.data_dir / f"{name}.log").open("ab")
        # A session of its own, so that stopping it reaches the worker
        # processes it starts, too.
        self.processes[name] = subprocess.Popen(
            command,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url} did not answer:\n{self.logs()}")
            time.sleep(0.1)

    @property
    def server_pid(self) -> int:
        """runserver's process, or gunicorn's master."""
        return self.processes["server"].pid

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')}"
            for path in sorted(self.data_dir.glob("*.log"))
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parent_pid(pid: int) -> int:
    """The parent of a running process (Linux: /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # pid (comm) state ppid ...: comm may hold spaces and parentheses.
    return int(stat.rpartition(")")[2].split()[1])

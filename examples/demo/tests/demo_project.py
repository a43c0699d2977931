"""The example project, started as a person would start it.

migrate, runserver, and for the database backend the db_worker commands,
with a data folder of its own and DEMO_TASKS_BACKEND: the only difference
between the backends is that setting.
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
        }

    def manage(self, *args: str) -> list[str]:
        return [sys.executable, str(DEMO_DIR / "manage.py"), *args]

    def start(self) -> None:
        subprocess.run(
            self.manage("migrate", "--noinput", "-v0"),
            env=self.env,
            check=True,
            timeout=START_TIMEOUT,
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        self.launch("server", "runserver", "--noreload", f"127.0.0.1:{port}")
        if self.backend == "db":
            # django-tasks-db runs one backend alias per worker.
            for alias in ("io", "cpu"):
                self.launch(
                    f"db_worker-{alias}",
                    "db_worker",
                    f"--backend={alias}",
                    "--interval=0.1",
                    "--no-startup-delay",
                    "--no-reload",
                )
        self.wait_until_serving()

    def launch(self, name: str, *args: str) -> None:
        log = (self.data_dir / f"{name}.log").open("wb")
        # A session of its own, so that stopping it reaches the worker
        # processes it starts, too.
        self.processes[name] = subprocess.Popen(
            self.manage(*args),
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

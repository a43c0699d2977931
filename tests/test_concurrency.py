"""Bursts from three web processes at once on the database store (issue 13, item 5).

A real gunicorn with three sync workers serves ``tests.server_urls`` on the
test settings, so that its processes share the test databases with this one.
Thirty requests at once each enqueue twenty tasks (outside any transaction,
in one on the store's database, or in one on another); every task writes,
in one transaction, a row of its own and 1 more to a shared counter, on the
store's database. On SQLite (WAL, IMMEDIATE transactions, a busy timeout) and on
PostgreSQL alike: no "database is locked", nothing else logged, every task
SUCCESSFUL, each write there exactly once, each task run in the web process
that enqueued it, and all three enqueuing. Then reads: the status of a result
asked of any web process, 60 times, is always there.

A request given a barrier waits until all three web processes have entered
it (see tests/server_urls.py): the bursts always reach all three.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from django.conf import settings
from django.tasks import TaskResultStatus, task_backends

from django_tasks_local.models import StoredResult
from tests.conftest import postgres_available
from tests.helpers import DEADLINE, REPO, free_port, http_get, wait_until
from tests.models import Record

BIN = Path(sys.executable).parent
WEB_PROCESSES = 3
REQUESTS = 30
#: Tasks each request enqueues, by backend: fewer on the process pools, whose
#: six worker processes (two per web process) take most of the time to start.
TASKS_PER_REQUEST = {"threads": 20, "processes": 5}
STATUS_REQUESTS = 60

SQLITE_ALIASES = ["threads-sqlite", "processes-sqlite"]
POSTGRES_ALIASES = ["threads-postgres", "processes-postgres"]

#: What the server's log must never hold (its WARNING and above, and
#: gunicorn's own messages, are all in it).
BAD_LOG_FRAGMENTS = ["database is locked", "Traceback", "WARNING", "ERROR", "CRITICAL"]


def postgres(alias: str) -> Any:
    return pytest.param(alias, marks=pytest.mark.postgres)


@dataclass
class Server:
    port: int
    log: Path
    barriers: Path
    _numbers: count

    def url(self, view: str, **params: object) -> str:
        return f"http://127.0.0.1:{self.port}/{view}/?{urllib.parse.urlencode(params)}"

    def barrier(self) -> dict[str, object]:
        """The parameters of a fresh barrier, for the requests of one burst."""
        path = self.barriers / str(next(self._numbers))
        path.mkdir()
        return {"barrier": path, "processes": WEB_PROCESSES}

    def log_problems(self) -> list[str]:
        return [
            line
            for line in self.log.read_text().splitlines()
            if any(fragment in line for fragment in BAD_LOG_FRAGMENTS)
        ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Any:
    """gunicorn, three sync workers, on the task aliases of the database store;
    stopped with SIGTERM, as a process manager does, and its log checked."""
    aliases = list(SQLITE_ALIASES)
    if os.environ.get("CI") == "true" or postgres_available():
        aliases += POSTGRES_ALIASES
    here = tmp_path_factory.mktemp("gunicorn")
    (here / "barriers").mkdir()
    port = free_port()
    log = here / "gunicorn.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "SERVER_TASK_ALIASES": ",".join(aliases),
        # src first: the server runs the code of this tree, installed or not.
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
    }
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "--workers",
                str(WEB_PROCESSES),
                "--bind",
                f"127.0.0.1:{port}",
                # Not the default path in the home directory, which another
                # gunicorn may hold.
                "--no-control-socket",
                "django.core.wsgi:get_wsgi_application()",
            ],
            env=env,
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server = Server(port, log, here / "barriers", count())
        http_get(server.url("ping"), time.monotonic() + DEADLINE)
        yield server
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=DEADLINE)
        assert process.returncode == 0, log.read_text()
        assert server.log_problems() == [], log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=DEADLINE)


def get(url: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a GET (an error's too), without retrying."""
    try:
        with urllib.request.urlopen(url, timeout=DEADLINE) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {"body": error.read().decode(errors="replace")}


def burst(urls: list[str]) -> list[dict[str, Any]]:
    """GET every url at once; their JSON bodies, each asserted 200."""
    with ThreadPoolExecutor(len(urls)) as pool:
        answers = list(pool.map(get, urls))
    failed = [answer for answer in answers if answer[0] != 200]
    assert failed == [], failed
    return [body for _, body in answers]


def pid_of(worker_id: str) -> int:
    """The process of a worker id (``host:pid`` or ``host:pid:thread``)."""
    return int(worker_id.split(":")[1])


def parent_of(pid: int) -> int:
    """The parent process of a running process (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # pid (comm) state ppid ...: comm may hold spaces, so split after ")".
    return int(stat.rsplit(")", 1)[1].split()[1])


def wait_until_all_finished(database: str, alias: str, ids: list[str]) -> None:
    """Poll the store until every one of ``ids`` has finished (whichever process ran it)."""
    rows = StoredResult.objects.using(database).filter(backend=alias, id__in=ids)
    wait_until(
        lambda: rows.filter(finished_at__isnull=False).count() == len(ids),
        message=f"{len(ids)} tasks on {alias} finished",
    )


@pytest.mark.parametrize(
    "alias", [*SQLITE_ALIASES, *(postgres(alias) for alias in POSTGRES_ALIASES)]
)
def test_a_burst_from_every_web_process_loses_no_write(server, alias):
    database = settings.TASKS[alias]["OPTIONS"]["DATABASE"]
    tasks_per_request = TASKS_PER_REQUEST[alias.partition("-")[0]]
    label = f"burst-{uuid4().hex}"
    records = Record.objects.using(database)
    records.create(label=label, value=0)
    barrier = server.barrier()
    # A third of the requests enqueue outside any transaction, a third in one
    # on the store's database, a third in one on another database.
    atomic = ["", database, "default"]
    urls = [
        server.url(
            "enqueue",
            alias=alias,
            database=database,
            label=label,
            count=tasks_per_request,
            atomic=atomic[n % len(atomic)],
            **barrier,
        )
        for n in range(REQUESTS)
    ]

    answers = burst(urls)

    # All three web processes enqueued, at once (the barrier).
    web_pids = {answer["pid"] for answer in answers}
    assert len(web_pids) == WEB_PROCESSES
    enqueued_by = {
        result_id: answer["pid"] for answer in answers for result_id in answer["ids"]
    }
    ids = list(enqueued_by)
    assert len(ids) == REQUESTS * tasks_per_request  # no id twice
    wait_until_all_finished(database, alias, ids)
    backend = task_backends[alias]
    results = {result_id: backend.get_result(result_id) for result_id in ids}
    failed = {
        result_id: [error.traceback for error in result.errors]
        for result_id, result in results.items()
        if result.status != TaskResultStatus.SUCCESSFUL
    }
    assert failed == {}
    # Each task's row, exactly once; the counter, once per task.
    written = Counter(
        records.filter(label__startswith=f"{label}:").values_list("label", flat=True)
    )
    assert written == Counter(f"{label}:{result_id}" for result_id in ids)
    assert records.get(label=label).value == len(ids)
    # Each ran once, in a worker of the web process that enqueued it (that
    # process's lease owns its row): all three ran tasks.
    for result in results.values():
        [worker_id] = result.worker_ids
        assert result.return_value == pid_of(worker_id)
    owners = dict(
        StoredResult.objects.using(database)
        .filter(id__in=ids)
        .values_list("id", "owner")
    )
    assert {
        result_id: pid_of(owner) for result_id, owner in owners.items()
    } == enqueued_by
    worker_pids = {pid_of(result.worker_ids[0]) for result in results.values()}
    if alias.startswith("threads"):
        # A pool thread of the web process (host:pid:thread), of MAX_WORKERS.
        assert {
            result_id: pid_of(result.worker_ids[0])
            for result_id, result in results.items()
        } == enqueued_by
        threads = Counter(
            pid_of(worker_id)
            for worker_id in {result.worker_ids[0] for result in results.values()}
        )
        max_workers = settings.TASKS[alias]["OPTIONS"]["MAX_WORKERS"]
        assert max(threads.values()) <= max_workers, threads
    else:
        # A worker process of the web process's pool, still running.
        assert {parent_of(pid) for pid in worker_pids} == web_pids
    assert server.log_problems() == []


@pytest.mark.parametrize("alias", ["threads-sqlite", postgres("threads-postgres")])
def test_any_web_process_reads_the_status_of_any_result(server, alias):
    database = settings.TASKS[alias]["OPTIONS"]["DATABASE"]
    label = f"status-{uuid4().hex}"
    Record.objects.using(database).create(label=label, value=0)
    [answer] = burst(
        [server.url("enqueue", alias=alias, database=database, label=label, count=3)]
    )
    owner, ids = answer["pid"], answer["ids"]

    def ask_every_process() -> list[dict[str, Any]]:
        barrier = server.barrier()
        urls = [
            server.url("status", alias=alias, id=ids[n % len(ids)], **barrier)
            for n in range(STATUS_REQUESTS)
        ]
        answers = burst(urls)  # all 200: no TaskResultDoesNotExist (404)
        # All three served some: the two that did not enqueue read the store.
        assert {answer["pid"] for answer in answers} > {owner}
        assert len({answer["pid"] for answer in answers}) == WEB_PROCESSES
        return answers

    # At once, while the tasks may still wait or run.
    early = ask_every_process()
    assert {answer["status"] for answer in early} <= {
        "READY",
        "RUNNING",
        "SUCCESSFUL",
    }
    wait_until_all_finished(database, alias, ids)
    backend = task_backends[alias]
    final = {result_id: backend.get_result(result_id) for result_id in ids}
    # Once finished, every process reads the same end.
    for n, answer in enumerate(ask_every_process()):
        result = final[ids[n % len(ids)]]
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert answer["status"] == "SUCCESSFUL"
        assert answer["worker_ids"] == result.worker_ids
        assert answer["return_value"] == owner == result.return_value
    assert server.log_problems() == []

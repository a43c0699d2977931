"""The views of the gunicorn server that tests/test_concurrency.py starts.

Each view answers JSON with the pid of the web process that served it.
Given ``barrier`` (a directory), a request first waits until as many web
processes as ``processes`` says have each entered it: a sync worker serves
one request at a time, so a burst's first requests land on every process.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.tasks import task_backends
from django.tasks.exceptions import TaskResultDoesNotExist
from django.urls import path

from tests.tasks import write_record

BARRIER_TIMEOUT = 30.0


def _meet(request: HttpRequest) -> None:
    barrier = request.GET.get("barrier")
    if not barrier:
        return
    Path(barrier, str(os.getpid())).touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while len(os.listdir(barrier)) < int(request.GET["processes"]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the web processes did not all reach {barrier}")
        time.sleep(0.005)


def enqueue(request: HttpRequest) -> JsonResponse:
    """Enqueue ``count`` write_record tasks on ``alias``; their result ids.

    Given ``atomic`` (a database alias), all in one transaction on it: the
    store's own database (its rows written in it, a write lock held on
    SQLite until it commits), or another (its rows held until it commits).
    """
    _meet(request)
    params = request.GET
    task = write_record.using(backend=params["alias"])
    atomic = params.get("atomic")
    with transaction.atomic(using=atomic) if atomic else nullcontext():
        ids = [
            task.enqueue(params["label"], params["database"]).id
            for _ in range(int(params["count"]))
        ]
    return JsonResponse({"pid": os.getpid(), "ids": ids})


def status(request: HttpRequest) -> JsonResponse:
    """The result ``id`` of ``alias``, wherever it was enqueued."""
    _meet(request)
    try:
        result = task_backends[request.GET["alias"]].get_result(request.GET["id"])
    except TaskResultDoesNotExist as exc:
        return JsonResponse({"pid": os.getpid(), "error": str(exc)}, status=404)
    return JsonResponse(
        {
            "pid": os.getpid(),
            "status": result.status,
            "worker_ids": result.worker_ids,
            "return_value": (
                result.return_value if result.status == "SUCCESSFUL" else None
            ),
        }
    )


def ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


urlpatterns = [
    path("enqueue/", enqueue),
    path("status/", status),
    path("ping/", ping),
]

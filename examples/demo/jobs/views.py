import os
from contextlib import suppress
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.tasks import Task, TaskResult, TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from django_tasks_local import LocalTaskResult

from .forms import FetchForm, PrimesForm, RecordsForm
from .models import Job
from .tasks import add_up_records, count_primes, fetch_pages

# Each kind of job: the form for its parameters and the task it runs.
KINDS: dict[str, tuple[type[forms.Form], Task]] = {
    Job.Kind.FETCH: (FetchForm, fetch_pages),
    Job.Kind.PRIMES: (PrimesForm, count_primes),
    Job.Kind.RECORDS: (RecordsForm, add_up_records),
}

# What the status view says of a job whose result the backend no longer has.
FORGOTTEN = {
    "status": "FORGOTTEN",
    "finished": True,
    "note": (
        "The backend no longer has this result: a memory store forgets its "
        "results when the server stops (DEMO_TASKS_BACKEND=durable keeps them)."
    ),
}


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render_index(request, {kind: form() for kind, (form, _) in KINDS.items()})


def render_index(
    request: HttpRequest, start_forms: dict[str, forms.Form], status: int = 200
) -> HttpResponse:
    context = {
        "choice": settings.TASK_BACKEND_CHOICE,
        "backends": {
            alias: (conf["BACKEND"], conf.get("OPTIONS", {}).get("STORE"))
            for alias, conf in settings.TASKS.items()
        },
        "start_forms": [
            (kind, Job.Kind(kind).label, KINDS[kind][1].backend, form)
            for kind, form in start_forms.items()
        ],
        "jobs": Job.objects.all()[:20],
    }
    return render(request, "jobs/index.html", context, status=status)


@require_POST
def start(request: HttpRequest, kind: str) -> HttpResponse:
    if kind not in KINDS:
        return HttpResponse(f"Unknown kind of job: {kind!r}.", status=404)
    form_class, task = KINDS[kind]
    form = form_class(request.POST)
    if form.is_valid():
        arguments = dict(form.cleaned_data)
        if delay := arguments.pop("delay", 0):
            if task.get_backend().supports_defer:
                run_after = timezone.now() + timedelta(seconds=delay)
                task = task.using(run_after=run_after)
            else:
                form.add_error("delay", "This backend cannot start a job later.")
    if not form.is_valid():
        start_forms = {other: form_class() for other, (form_class, _) in KINDS.items()}
        start_forms[kind] = form
        return render_index(request, start_forms, status=400)
    # One transaction: backends that hand the task over on commit (as the
    # thread and process pools do) never start it before its Job row exists.
    with transaction.atomic():
        result = task.enqueue(**arguments)
        Job.objects.create(
            kind=kind,
            parameters=arguments,
            result_id=result.id,
            # ImmediateBackend has already run the task, and cannot give its
            # result back later: its end is kept here.
            outcome=None
            if task.get_backend().supports_get_result
            else describe(result),
        )
    return redirect("jobs:index")


@require_GET
def status(request: HttpRequest, pk: int) -> JsonResponse:
    job = get_object_or_404(Job, pk=pk)
    task = KINDS[job.kind][1]
    state = job.outcome or FORGOTTEN
    if job.outcome is None and task.get_backend().supports_get_result:
        # Read from whichever process answers: the database store (and
        # django-tasks-db) share results; a memory store forgets them on restart.
        with suppress(TaskResultDoesNotExist):
            state = describe(task.get_result(job.result_id))
    response = JsonResponse({"id": job.pk, **state})
    # Which process answered: under gunicorn, any of its workers.
    response["X-Served-By"] = str(os.getpid())
    return response


def describe(result: TaskResult) -> dict[str, Any]:
    """What the page shows of a task result (JSON: Job.outcome keeps it)."""
    error = result.errors[-1] if result.errors else None
    run_after = result.task.run_after
    return {
        "status": result.status,
        "finished": result.is_finished,
        "run_after": run_after.isoformat() if run_after else None,
        "return_value": (
            result.return_value
            if result.status == TaskResultStatus.SUCCESSFUL
            else None
        ),
        "exception_class": error.exception_class_path if error else "",
        "traceback": error.traceback if error else "",
        "worker_id": result.worker_ids[-1] if result.worker_ids else "",
        # What the task saved last (jobs.tasks.report_progress), read from the
        # backend with the rest of the result. Only django-tasks-local's
        # results have metadata: ImmediateBackend's and django-tasks-db's
        # jobs show none.
        "progress": (
            result.metadata.get("progress")
            if isinstance(result, LocalTaskResult)
            else None
        ),
    }

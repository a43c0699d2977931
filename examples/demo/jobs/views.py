from contextlib import suppress

from django import forms
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.tasks import Task
from django.tasks.exceptions import TaskResultDoesNotExist
from django.views.decorators.http import require_GET, require_POST

from . import progress
from .forms import FetchForm, PrimesForm, RecordsForm
from .models import Job
from .tasks import add_up_records, count_primes, fetch_pages

# Each kind of job: the form for its parameters and the task it runs.
KINDS: dict[str, tuple[type[forms.Form], Task]] = {
    Job.Kind.FETCH: (FetchForm, fetch_pages),
    Job.Kind.PRIMES: (PrimesForm, count_primes),
    Job.Kind.RECORDS: (RecordsForm, add_up_records),
}


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render_index(request, {kind: form() for kind, (form, _) in KINDS.items()})


def render_index(
    request: HttpRequest, start_forms: dict[str, forms.Form], status: int = 200
) -> HttpResponse:
    context = {
        "choice": settings.TASK_BACKEND_CHOICE,
        "backends": {alias: conf["BACKEND"] for alias, conf in settings.TASKS.items()},
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
    if not form.is_valid():
        start_forms = {other: form_class() for other, (form_class, _) in KINDS.items()}
        start_forms[kind] = form
        return render_index(request, start_forms, status=400)
    # One transaction: backends that hand the task over on commit (as the
    # thread and process pools do) never start it before its Job row exists.
    with transaction.atomic():
        result = task.enqueue(**form.cleaned_data)
        job = Job(kind=kind, parameters=form.cleaned_data, result_id=result.id)
        # ImmediateBackend has already run the task: this is its final state.
        job.copy_result(result)
        job.save()
    return redirect("jobs:index")


@require_GET
def status(request: HttpRequest, pk: int) -> JsonResponse:
    job = get_object_or_404(Job, pk=pk)
    task = KINDS[job.kind][1]
    if task.get_backend().supports_get_result:
        # A result can be forgotten (a pool's, when the server restarts): the
        # row's state stands then.
        with suppress(TaskResultDoesNotExist):
            job.copy_result(task.get_result(job.result_id))
    return JsonResponse(
        {
            "id": job.pk,
            "status": job.status,
            "finished": job.is_finished,
            "progress": progress.read(job.result_id),
            "return_value": job.return_value,
            "exception_class": job.exception_class,
            "traceback": job.traceback,
            "worker_id": job.worker_id,
        }
    )

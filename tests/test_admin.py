"""The read-only admin of the database store's results."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.tasks import task_backends
from django.test import Client

from django_tasks_local.models import StoredResult
from tests import tasks
from tests.helpers import DEADLINE

ALIAS = "threads-sqlite"


pytestmark = pytest.mark.django_db(
    transaction=True, databases=["default", "store_sqlite"]
)


@pytest.fixture
def client() -> Client:
    admin = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def failed_id() -> str:
    result = tasks.raise_value_error.using(backend=ALIAS).enqueue()
    task_backends[ALIAS].wait_for_result(result.id, timeout=DEADLINE)
    return result.id


def test_the_list_shows_and_filters_results(client, failed_id):
    stored = StoredResult.objects.using("store_sqlite").get(id=failed_id)
    page = client.get("/admin/django_tasks_local/storedresult/?status__exact=FAILED")
    assert page.status_code == 200
    assert failed_id in page.text
    assert stored.task_path in page.text
    page = client.get(
        "/admin/django_tasks_local/storedresult/?status__exact=SUCCESSFUL"
    )
    assert failed_id not in page.text


def test_the_detail_shows_the_traceback(client, failed_id):
    page = client.get(f"/admin/django_tasks_local/storedresult/{failed_id}/change/")
    assert page.status_code == 200
    assert "Traceback (most recent call last)" in page.text


def test_nothing_can_be_added_changed_or_deleted(client, failed_id):
    base = "/admin/django_tasks_local/storedresult/"
    assert client.get(f"{base}add/").status_code == 403
    assert client.post(f"{base}{failed_id}/delete/").status_code == 403
    client.post(f"{base}{failed_id}/change/", {"status": "SUCCESSFUL"})
    assert (
        StoredResult.objects.using("store_sqlite").get(id=failed_id).status == "FAILED"
    )


def test_the_detail_shows_the_metadata(client, tmp_path):
    release = tmp_path / "release"
    release.touch()
    result = tasks.local_report_progress.using(
        backend=ALIAS, metadata={"customer": "acme-42"}
    ).enqueue(str(release))
    final = task_backends[ALIAS].wait_for_result(result.id, timeout=DEADLINE)
    assert final.metadata == {"customer": "acme-42", "progress": 100}
    page = client.get(f"/admin/django_tasks_local/storedresult/{result.id}/change/")
    assert page.status_code == 200
    assert "Metadata" in page.text
    assert "acme-42" in page.text

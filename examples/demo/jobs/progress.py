"""Progress of running tasks, kept in Django's cache under the result id.

The cache is shared by every process (see CACHES in settings), so a task in
a worker process can write what the web process reads.
"""

from typing import TypedDict

from django.core.cache import cache

# Long enough to outlive any demo job; the cache forgets it after that.
TIMEOUT = 60 * 60


class Progress(TypedDict):
    done: int
    total: int


def key(result_id: str) -> str:
    return f"jobs:progress:{result_id}"


def report(result_id: str, done: int, total: int) -> None:
    cache.set(key(result_id), Progress(done=done, total=total), TIMEOUT)


def read(result_id: str) -> Progress | None:
    return cache.get(key(result_id))

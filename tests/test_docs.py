"""The documentation's code runs: every fenced ```python block in docs/*.md.

The blocks of one page run in order in one namespace (a module registered
for the page, so that functions defined there count as module-level), with
Django set up on tests.settings and a real, committed database: tasks on the
process backend see what a block saved. ```py blocks are only shown.

Tasks that the pages use live in tests/docs_tasks.py, which the pages show
(through snippets) as a project's ``myapp/tasks.py``; ``import myapp.tasks``
is mapped to it here. A block must not close a backend alias of
tests.settings: the other tests share it.
"""

from __future__ import annotations

import re
import sys
import types
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.tasks import TaskResult, task_backends
from django.tasks.exceptions import InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued

from django_tasks_local import ExecutorBackend, ProcessPoolBackend, ThreadPoolBackend
from tests import docs_tasks

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    page: str
    number: int  # 1-based, among the page's executed blocks
    line: int  # 1-based line of the block's first code line
    source: str

    def __str__(self) -> str:
        return f"docs/{self.page}, python block {self.number} (line {self.line})"


def python_blocks(path: Path) -> list[Block]:
    """The page's ```python blocks, dedented to their fence, in order."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].split(maxsplit=1)[0] if opening["info"] else ""
        first = index
        while index < len(lines):
            closing = FENCE.match(lines[index])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            index += 1
        else:
            raise AssertionError(
                f"docs/{path.name}: the fence on line {first} never closes"
            )
        body = [
            line[len(indent) :] if line.startswith(indent) else line.lstrip()
            for line in lines[first:index]
        ]
        index += 1
        if language == "python":
            blocks.append(
                Block(path.name, len(blocks) + 1, first + 1, "\n".join(body) + "\n")
            )
    return blocks


PAGES = sorted(DOCS.glob("*.md"))
PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]


@pytest.fixture
def myapp(monkeypatch: pytest.MonkeyPatch) -> None:
    """``myapp.tasks`` as the pages import it: tests/docs_tasks.py."""
    package = types.ModuleType("myapp")
    package.__path__ = []
    package.tasks = docs_tasks  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "myapp", package)
    monkeypatch.setitem(sys.modules, "myapp.tasks", docs_tasks)


def wait_for(results: list[TaskResult]) -> None:
    """Let the tasks a page enqueued finish before the next test (and the flush)."""
    for result in results:
        try:
            backend = task_backends[result.backend]
        except InvalidTaskBackend:
            continue  # an alias that the page configured for itself, and ended
        if isinstance(backend, ExecutorBackend):
            with suppress(TaskResultDoesNotExist):
                backend.wait_for_result(result.id, timeout=60)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "page", PAGES_WITH_CODE, ids=[page.name for page in PAGES_WITH_CODE]
)
def test_page_code_runs(
    page: Path, myapp: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    enqueued: list[TaskResult] = []

    def record(sender: type, task_result: TaskResult, **kwargs: object) -> None:
        enqueued.append(task_result)

    task_enqueued.connect(record, dispatch_uid="test_docs")
    try:
        for block in python_blocks(page):
            # Padded so that tracebacks give the line numbers of the page.
            padded = "\n" * (block.line - 1) + block.source
            code = compile(padded, str(page), "exec")
            try:
                exec(code, module.__dict__)
            except Exception as exc:
                raise AssertionError(
                    f"{block} raised {type(exc).__name__}: {exc}"
                ) from exc
    finally:
        task_enqueued.disconnect(dispatch_uid="test_docs")
        wait_for(enqueued)


def test_the_parser_finds_fenced_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n"
        "```python\n"
        "a = 1\n"
        "```\n"
        "```py\n"
        "shown_only()\n"
        "```\n"
        '!!! note\n    ```python title="x.py"\n    b = a + 1\n    ```\n'
        "````markdown\n```python\nnot_code()\n```\n````\n"
    )
    blocks = python_blocks(page)
    assert [(block.line, block.source) for block in blocks] == [
        (3, "a = 1\n"),
        (10, "b = a + 1\n"),
    ]
    assert str(blocks[1]) == "docs/page.md, python block 2 (line 10)"


def test_configuration_page_names_every_option_and_check_id() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    options = {
        *ThreadPoolBackend.declared_options,
        *ProcessPoolBackend.declared_options,
    }
    missing = sorted(name for name in options if f"`{name}`" not in text)
    assert not missing, f"docs/configuration.md does not document {missing}"
    source = (ROOT / "src" / "django_tasks_local" / "options.py").read_text(
        encoding="utf-8"
    )
    ids = set(re.findall(r"django_tasks_local\.E\d{3}", source))
    assert ids, "no check ids found in options.py"
    missing = sorted(check_id for check_id in ids if check_id not in text)
    assert not missing, f"docs/configuration.md does not document {missing}"

"""Run Django's own tests/tasks/ suite against ThreadPoolBackend and ProcessPoolBackend.

Each on the memory store (``thread``, ``process``) and on the database store
(``thread-database``, ``process-database``).

Used through ``scripts/run-django-task-tests`` (``make django-tests``); see
docs/django-test-suite.md. Steps:

1. Download the sdist of the Django version this interpreter has (``pip
   download``, cached in .django-suite/), and extract its tests/tasks/.
2. For each backend, in a fresh interpreter (Django's settings are set up
   once per process): swap ImmediateBackend for our backend, with a wait
   after each enqueue (suite_backends.py), and run the tests that reach it.
3. Print, per backend, passed/failed and a one-line reason for each failure.

Exit status: 0 when it ran (whatever failed: failures are expected, see the
docs page), 1 when a test outside the known list fails or a known one passes
(``--strict``), 2 when the suite could not be fetched or run.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = ROOT / ".django-suite"

# Django's test modules under tests/tasks/ that the harness runs. Of each,
# only the tests that use the ImmediateBackend (the one swapped for ours)
# count: the others exercise DummyBackend or custom backends, not ours.
MODULES = ["test_immediate_backend", "test_tasks"]

# Failures known and classified in docs/django-test-suite.md, by test id
# (module.Class.test). --strict reports any difference from this list.
KNOWN_FAILURES = {
    "by design": {
        "test_immediate_backend.ImmediateBackendTestCase.test_using_correct_backend",
        "test_immediate_backend.ImmediateBackendTestCase.test_cannot_get_result",
        "test_immediate_backend.ImmediateBackendTestCase.test_cannot_refresh_result",
        "test_immediate_backend.ImmediateBackendTestCase.test_cannot_pass_run_after",
        "test_immediate_backend.ImmediateBackendTestCase.test_throws_keyboard_interrupt",
        "test_immediate_backend.ImmediateBackendTransactionTestCase.test_doesnt_wait_until_transaction_commit_by_default",
        "test_tasks.TaskTestCase.test_get_backend",
    },
    "gap": set(),
}
BACKENDS = ["thread", "process", "thread-database", "process-database"]
#: The database store's database alias (suite_settings.STORE_DATABASE).
STORE_DATABASE = "tasks_store"


def on_database_store(backend: str) -> bool:
    return backend.endswith("-database")


class HarnessError(Exception):
    """The suite could not be fetched or run (exit status 2)."""


# --------------------------------------------------------------------------- fetch


def fetch_tests(version: str) -> Path:
    """The tests/ folder of Django ``version``'s sdist, holding only tasks/."""
    target = CACHE / f"django-{version}" / "tests"
    if (target / "tasks" / "test_immediate_backend.py").is_file():
        return target
    CACHE.mkdir(exist_ok=True)
    archives = sorted(CACHE.glob(f"[Dd]jango-{version}.tar.gz"))
    if not archives:
        print(f">> downloading the Django {version} sdist into {CACHE}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                str(CACHE),
                f"Django=={version}",
            ],
            check=False,
        )
        archives = sorted(CACHE.glob(f"[Dd]jango-{version}.tar.gz"))
    if not archives:
        raise HarnessError(f"pip download left no Django-{version}.tar.gz in {CACHE}")
    with tarfile.open(archives[0]) as archive:
        members = [
            member
            for member in archive.getmembers()
            if member.name.split("/")[1:3] == ["tests", "tasks"]
        ]
        if not members:
            raise HarnessError(f"{archives[0].name} has no tests/tasks/")
        with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
            archive.extractall(scratch, members=members, filter="data")
            extracted = Path(scratch) / members[0].name.split("/")[0] / "tests"
            target.parent.mkdir(parents=True, exist_ok=True)
            extracted.rename(target)
    return target


# --------------------------------------------------------------------------- child


def reaches_immediate(test: unittest.TestCase) -> bool:
    """Whether the test uses the ImmediateBackend, which the harness swaps."""
    if type(test).__module__.startswith("unittest"):
        return True  # unittest's stand-in for a module that failed to import
    method = getattr(type(test), test._testMethodName)
    overridden = getattr(type(test), "_overridden_settings", None) or {}
    default = overridden.get("TASKS", {}).get("default", {})
    if default.get("BACKEND", "").endswith(".ImmediateBackend"):
        return True
    try:
        source = inspect.getsource(method)
    except (OSError, TypeError):
        source = ""
    # Names the "immediate" alias, or TASKS with ImmediateBackend, itself.
    return "immediate" in source.lower()


def test_id(test: unittest.TestCase) -> str:
    # "tasks.test_immediate_backend.Class.test" -> "test_immediate_backend.Class.test"
    return test.id().removeprefix("tasks.")


def reason(err: Any, where: str = "") -> str:
    """The exception's type and the first line of its message, cut to one line."""
    exc_type, exc, _ = err
    message = str(exc).strip().splitlines()
    text = f"{where}{exc_type.__name__}: {message[0] if message else ''}".strip()
    return text if len(text) <= 200 else text[:197] + "..."


class RecordingResult(unittest.TextTestResult):
    """Keeps each test's outcome (first failure's reason; subtests included)."""

    outcomes: dict[str, dict[str, str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes = {}

    def _record(self, test: unittest.TestCase, status: str, why: str = "") -> None:
        known = self.outcomes.get(test_id(test))
        if known is None or (known["status"] == "passed" and status != "passed"):
            self.outcomes[test_id(test)] = {"status": status, "reason": why}

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._record(test, "failed", reason(err))

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        self._record(test, "failed", reason(err))

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            # The subtest's parameters (Django's tests pass the task), short.
            values = [subtest._message, *subtest.params.values()]
            where = ", ".join(
                getattr(value, "name", str(value))
                for value in values
                if value is not unittest.case._subtest_msg_sentinel
            )
            self._record(test, "failed", reason(err, f"[{where}] " if where else ""))

    def addSkip(self, test: unittest.TestCase, why: str) -> None:
        super().addSkip(test, why)
        self._record(test, "skipped", why)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "passed")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "failed", "unexpected success")


def allow_store_queries(test: unittest.TestCase) -> None:
    """Let the test's class query the database store's database.

    Django's SimpleTestCase and TransactionTestCase refuse queries on every
    database alias not in the class's ``databases`` (``_add_databases_failures``
    patches the test thread's connection to that alias). The store reads
    through the ORM on the calling thread's connection, and commits a held
    result from the ``on_commit`` callback, on the test's thread: so each
    class that reaches our backend gets ``tasks_store`` in its ``databases``,
    as a project's own tests of a backend on the store would declare it. The
    runner then also sets that database up (the file, migrated) and removes
    it at the end, as it does each test database. (The store's writes outside
    a transaction and the workers' queries go through connections of their
    own, which the patch does not reach.)

    Not for a TestCase: it would wrap each test in a transaction on
    ``tasks_store``, whose write lock (SQLite locks the whole file) the
    workers' writes would then wait on. No test of tests/tasks/ that reaches
    ImmediateBackend is one; if one becomes one, this says so.
    """
    from django.test import SimpleTestCase, TestCase

    cls = type(test)
    if not issubclass(cls, SimpleTestCase) or cls.databases == "__all__":
        return
    if issubclass(cls, TestCase):
        raise RuntimeError(
            f"{cls.__qualname__} is a TestCase: its transaction around each test "
            f"would lock the store's SQLite database {STORE_DATABASE!r} against "
            "the workers. The harness cannot run it on the database store."
        )
    if STORE_DATABASE not in cls.databases:
        cls.databases = {*cls.databases, STORE_DATABASE}


def run_child(backend: str, modules: list[str], out: Path, verbosity: int) -> None:
    """In a fresh interpreter set up on suite_settings: run and record."""
    import django
    from django.test.runner import DiscoverRunner
    from django.test.utils import iter_test_cases

    django.setup()
    import suite_backends

    from django_tasks_local.runtime import close_for_exit

    backend_class = suite_backends.install(backend)
    recorded: dict[str, dict[str, str]] = {}
    not_run: list[str] = []

    class Runner(DiscoverRunner):
        def build_suite(self, *args: Any, **kwargs: Any) -> unittest.TestSuite:
            suite = super().build_suite(*args, **kwargs)
            kept = unittest.TestSuite()
            for test in iter_test_cases(suite):
                if reaches_immediate(test):
                    kept.addTest(test)
                    if on_database_store(backend):
                        allow_store_queries(test)
                else:
                    not_run.append(test_id(test))
            print(
                f"Running the {kept.countTestCases()} that use ImmediateBackend "
                f"(swapped for ours); {len(not_run)} use only other backends.",
                flush=True,
            )
            return kept

        def get_resultclass(self) -> Any:
            return RecordingResult

        def run_suite(self, suite: unittest.TestSuite, **kwargs: Any) -> Any:
            result = super().run_suite(suite, **kwargs)
            recorded.update(result.outcomes)
            return result

        def teardown_databases(self, old_config: Any, **kwargs: Any) -> None:
            # Stop every backend (its workers, and on the database store its
            # lease keeper, which deletes its lease) while the test databases
            # are still there, not at the interpreter's exit after them.
            close_for_exit()
            if on_database_store(backend):
                # Evidence that the results went through the store.
                from django_tasks_local.models import StoredResult

                rows = StoredResult.objects.using(STORE_DATABASE).count()
                print(f"{rows} task results in the database store.", flush=True)
            super().teardown_databases(old_config, **kwargs)

    store = (
        f"the database store ({STORE_DATABASE!r})"
        if on_database_store(backend)
        else "the memory store"
    )
    print(
        f">> Django {django.get_version()}, tests/tasks/ on "
        f"{backend_class.__bases__[-1].__name__} on {store} "
        "(waiting after each enqueue)",
        flush=True,
    )
    Runner(verbosity=verbosity, interactive=False).run_tests(
        [f"tasks.{module}" for module in modules]
    )
    out.write_text(json.dumps({"outcomes": recorded, "not_run": not_run}))


# --------------------------------------------------------------------------- parent


def run_backend(
    backend: str,
    tests_dir: Path,
    modules: list[str],
    verbosity: int,
    show_output: bool,
) -> dict[str, Any]:
    log = tests_dir.parent / f"{backend}.log"
    env = dict(os.environ)
    # The spawned workers of the process backend import Django's test tasks
    # (tasks.tasks) and these settings: both folders go on their path too.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tests_dir), str(HERE), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["DJANGO_SETTINGS_MODULE"] = "suite_settings"
    env.pop("DJANGO_SUITE_STORE_DB", None)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "outcomes.json"
        if on_database_store(backend):
            # The database store's SQLite file, a fresh one per run; through
            # the environment, the spawned workers' settings name it too.
            env["DJANGO_SUITE_STORE_DB"] = str(Path(scratch) / "tasks_store.sqlite3")
        command = [
            sys.executable,
            str(Path(__file__)),
            "--child",
            backend,
            "--out",
            str(out),
            "--verbosity",
            str(verbosity),
            *(arg for module in modules for arg in ("--module", module)),
        ]
        if show_output:
            completed = subprocess.run(command, env=env, cwd=tests_dir, check=False)
        else:
            print(f">> {backend}: Django's test output in {log}", flush=True)
            with log.open("w") as stream:
                completed = subprocess.run(
                    command,
                    env=env,
                    cwd=tests_dir,
                    stdout=stream,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
        if not out.is_file():
            where = "" if show_output else f"; see {log}"
            raise HarnessError(
                f"the {backend} backend's run ended (exit {completed.returncode}) "
                f"without results{where}"
            )
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def known_kind(test: str) -> str:
    for kind, tests in KNOWN_FAILURES.items():
        if test in tests:
            return kind
    return "NEW"


def summarize(backend: str, result: dict[str, Any]) -> list[str]:
    """Print the backend's summary; return the differences from KNOWN_FAILURES."""
    outcomes: dict[str, dict[str, str]] = result["outcomes"]
    by_module: dict[str, list[str]] = {}
    for test in sorted(outcomes):
        by_module.setdefault(test.split(".")[0], []).append(test)
    differences = []
    print(f"\n== {backend}")
    for module, tests in by_module.items():
        failed = [t for t in tests if outcomes[t]["status"] == "failed"]
        passed = [t for t in tests if outcomes[t]["status"] == "passed"]
        skipped = len(tests) - len(failed) - len(passed)
        line = f"{module}: {len(passed)} passed, {len(failed)} failed"
        print(line + (f", {skipped} skipped" if skipped else ""))
        for test in failed:
            kind = known_kind(test)
            name = test.split(".", 1)[1]
            print(f"  FAIL [{kind}] {name}: {outcomes[test]['reason']}")
            if kind == "NEW":
                differences.append(f"{backend}: {test} fails")
    for test in sorted(set().union(*KNOWN_FAILURES.values())):
        if outcomes.get(test, {}).get("status") == "passed":
            print(f"  now PASSES (listed as failing) {test}")
            differences.append(f"{backend}: {test} passes")
    not_run = result["not_run"]
    if not_run:
        print(f"({len(not_run)} tests not run: they use only Django's other backends)")
    return differences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="run on this backend only (repeatable; default: all four)",
    )
    parser.add_argument(
        "--module",
        action="append",
        help=f"a module of tests/tasks/ (repeatable; default: {', '.join(MODULES)})",
    )
    parser.add_argument("--verbosity", type=int, default=1)
    parser.add_argument(
        "--show-output",
        action="store_true",
        help="print Django's test output (tracebacks) here, not in a log file",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when the failures differ from the classified list",
    )
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    modules = options.module or MODULES

    if options.child:
        run_child(options.child, modules, options.out, options.verbosity)
        return 0

    import django

    try:
        tests_dir = fetch_tests(django.get_version())
        results = {
            backend: run_backend(
                backend, tests_dir, modules, options.verbosity, options.show_output
            )
            for backend in options.backend or BACKENDS
        }
    except HarnessError as error:
        print(f">> {error}", file=sys.stderr)
        return 2
    differences = []
    print("\n" + "=" * 70)
    print(f"Django {django.get_version()} tests/tasks/ on django-tasks-local")
    print(
        "[by design]: documented difference; [gap]: ours falls short; [NEW]: unclassified"
    )
    for backend, result in results.items():
        differences += summarize(backend, result)
    if differences:
        print("\nDifferences from the classified list (docs/django-test-suite.md):")
        for difference in differences:
            print(f"  {difference}")
        return 1 if options.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        from django.tasks.signals import task_finished, task_started

        from .models import record_task_result

        # Every backend sends these, in whichever process or thread runs the
        # task's bookkeeping: the Job row keeps the last state seen.
        task_started.connect(record_task_result, dispatch_uid="jobs.started")
        task_finished.connect(record_task_result, dispatch_uid="jobs.finished")

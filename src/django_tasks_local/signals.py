"""The signal this package adds to Django's task signals."""

from django.dispatch import Signal

#: Sent when an attempt failed and the task will be tried again, with its
#: READY result (``task_result``): ``errors[-1]`` is the attempt's error, and
#: ``task.run_after`` when the next attempt starts. The exception is in hand,
#: as for ``task_finished``. ``task_finished`` is sent once, at the end.
task_retrying = Signal()

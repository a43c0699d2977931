#!/usr/bin/env python
"""The example project's command-line utility: ``python manage.py runserver``."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


# The guard matters: process-pool workers start by "spawn", which imports this
# file (as __mp_main__) in every new worker process.
if __name__ == "__main__":
    main()

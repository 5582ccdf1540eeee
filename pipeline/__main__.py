"""``python -m pipeline``: the same as the ``pipeline`` command."""

from .cli import run_main

run_main()

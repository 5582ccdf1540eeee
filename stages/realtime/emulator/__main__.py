"""``python -m stages.realtime.emulator [options]``: the same as ``pipeline emulator``."""

import sys

from .cli import main

sys.exit(main())

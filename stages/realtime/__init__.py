"""The realtime session stage (``realtime_session``) and its protocol emulator.

``wire`` holds one codec per dialect (names, formats, the typed session and events both ways),
shared by the client side (``protocol``, the sans-I/O core, pumped by the ``session`` stage) and
the server side (``emulator``); importing this package registers the stage.
"""

from __future__ import annotations

from . import session as session

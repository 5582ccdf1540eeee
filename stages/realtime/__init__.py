"""The realtime session stage (``realtime_session``) and its protocol emulator.

``protocol`` is the sans-I/O core shared by the client stage (``session``) and the emulator
(``emulator``); importing this package registers the stage.
"""

from __future__ import annotations

from . import session as session

"""Which event loop a server runs on (pipeline.loops)."""

from __future__ import annotations

import sys

import pytest

from pipeline.errors import UsageError
from pipeline.loops import loop_factory, loop_in_use, run


async def _kind() -> str:
    return loop_in_use()


def test_asyncio_is_asyncios_own_loop() -> None:
    assert loop_factory("asyncio") == ("asyncio", None)
    assert run(_kind(), "asyncio") == "asyncio"


def test_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop", reason="uvloop is not installed (pip install 'pipeline[fast]')")
    assert loop_factory("auto")[0] == "uvloop"
    assert run(_kind(), "auto") == "uvloop"
    assert run(_kind(), "uvloop") == "uvloop"


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert loop_factory("auto") == ("asyncio", None)
    assert run(_kind(), "auto") == "asyncio"
    with pytest.raises(UsageError) as err:
        loop_factory("uvloop")
    assert "pip install 'pipeline[fast]'" in str(err.value)


def test_an_unknown_loop_names_the_choices() -> None:
    with pytest.raises(UsageError) as err:
        loop_factory("trio")
    assert "auto, asyncio, uvloop" in str(err.value)

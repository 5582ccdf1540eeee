"""The dialects: one codec each. Adding a dialect is a module beside this one (a
:class:`~.base.DialectCodec` subclass and its ``CODEC``) plus its name in :data:`Dialect` and
its codec in :data:`CODECS`."""

from __future__ import annotations

from typing import Literal, TypeAlias

from pipeline.errors import UsageError

from . import gemini, openai, openai_beta, xai
from .base import DialectCodec

Dialect: TypeAlias = Literal["xai", "openai", "openai-beta", "gemini"]

#: Every dialect's codec, the default (``xai``) first.
CODECS: dict[Dialect, DialectCodec] = {
    "xai": xai.CODEC,
    "openai": openai.CODEC,
    "openai-beta": openai_beta.CODEC,
    "gemini": gemini.CODEC,
}
DIALECTS: tuple[Dialect, ...] = tuple(CODECS)
#: Every name a dialect goes by (``grok``, ``openai-ga``, ...) -> the dialect.
DIALECT_ALIASES: dict[str, Dialect] = {
    alias: name for name, c in CODECS.items() for alias in (name, *c.aliases)
}


def codec(dialect: Dialect) -> DialectCodec:
    """The codec of ``dialect``."""
    return CODECS[dialect]


def normalize_dialect(name: str) -> Dialect:
    """Our dialect for any of its names (``openai-ga`` is ``openai``). Raises ValueError."""
    try:
        return DIALECT_ALIASES[name.strip().lower()]
    except KeyError:
        raise UsageError(f"unknown dialect '{name}'; use one of {', '.join(DIALECTS)}") from None

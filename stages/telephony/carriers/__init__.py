"""Carriers: each phone company's media stream dialect behind one interface
(:class:`~.base.Carrier`), with the other end of each for simulators (:class:`~.base.CarrierSide`).
"""

from __future__ import annotations

from .base import Carrier, CarrierMessageError, CarrierSide
from .exotel import Exotel, ExotelSide
from .plivo import Plivo, PlivoSide
from .telnyx import Telnyx, TelnyxSide
from .twilio import Twilio, TwilioSide
from .vonage import Vonage, VonageSide

__all__ = ["CARRIERS", "SIDES", "Carrier", "CarrierMessageError", "CarrierSide", "carrier"]

CARRIERS: dict[str, type[Carrier]] = {c.name: c for c in (Twilio, Telnyx, Plivo, Vonage, Exotel)}
SIDES: dict[str, type[CarrierSide]] = {
    s.carrier.name: s for s in (TwilioSide, TelnyxSide, PlivoSide, VonageSide, ExotelSide)
}


def carrier(name: str) -> type[Carrier]:
    """The carrier called ``name``; ValueError listing the known ones otherwise."""
    try:
        return CARRIERS[name]
    except KeyError:
        raise ValueError(f"unknown carrier {name!r}; one of: {', '.join(CARRIERS)}") from None

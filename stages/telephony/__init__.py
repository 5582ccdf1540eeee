"""Telephony: phone calls as pipelines.

``twilio`` holds the Twilio Media Streams message model and the two stages of a call leg
(``twilio_source``, ``twilio_sink``); ``serve`` is the ``pipeline serve`` server that answers
each call with a fresh run of the pipeline. Around the media stream: ``webhook`` (the Voice
webhook, status callbacks and their ``X-Twilio-Signature`` checks), ``signature``, ``twiml``,
``rest`` (call control through Twilio's REST API) and ``fake_twilio`` (a strict fake of that
API for tests). Importing this package registers the stages; the server (websockets,
Prometheus) is imported only by ``pipeline serve``.
"""

from __future__ import annotations

from . import phone as phone
from . import recorder as recorder
from . import twilio as twilio

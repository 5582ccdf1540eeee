"""Telephony: phone calls in and out of pipelines (Twilio Media Streams, call control, the
webhook and its signatures, call recording)."""

"""Event names every dialect shares, by their canonical (OpenAI GA) names.

A dialect that spells a server event otherwise (OpenAI beta's ``response.audio.delta``, xAI's
``response.text.delta``) says so in its codec's ``server_names``; :data:`EVENT_ALIASES` is the
union of those, read backwards, for a client that accepts every dialect's spelling.
"""

from __future__ import annotations

#: Client event names a strict server accepts (the dialect's codec narrows this).
#: ``conversation.item.commit`` appears only in an early xAI docs table;
#: :data:`CLIENT_EVENT_ALIASES` maps it to the real name.
CLIENT_EVENTS: frozenset[str] = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.create",
        "response.cancel",
        "output_audio_buffer.clear",
    }
)
CLIENT_EVENT_ALIASES: dict[str, str] = {"conversation.item.commit": "input_audio_buffer.commit"}

#: Server events a client understands (canonical names).
SERVER_EVENTS: frozenset[str] = frozenset(
    {
        "session.created",
        "session.updated",
        "conversation.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.updated",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "rate_limits.updated",
        "error",
        "ping",
    }
)

#: Response statuses (``response.done``).
RESPONSE_STATUSES: tuple[str, ...] = (
    "completed",
    "in_progress",
    "incomplete",
    "cancelled",
    "failed",
)

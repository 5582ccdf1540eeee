#!/usr/bin/env bash
# Make examples/caller_8k_ulaw.wav: a caller saying two short utterances with a pause between,
# as an 8 kHz μ-law WAV (format tag 7), the way audio arrives from a phone line.
#
# Needs espeak-ng and sox (Debian/Ubuntu: apt-get install -y espeak-ng sox).
# The output is byte-for-byte reproducible for a given espeak-ng/sox version: -D turns off
# sox's dither (random noise it would otherwise add when writing 16 or 8 bits).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/caller_8k_ulaw.wav}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

voice="en-us"
speed=160   # words per minute

espeak-ng -v "$voice" -s "$speed" -w "$tmp/one.wav" "Hi, what time is it in Tokyo?"
espeak-ng -v "$voice" -s "$speed" -w "$tmp/two.wav" "And where is my order, A one two three?"

rate="$(sox --i -r "$tmp/one.wav")"
# 0.4 s of lead-in, the first utterance, a 1.5 s pause, the second utterance, 0.6 s of tail
sox -D -n -r "$rate" -c 1 -b 16 "$tmp/lead.wav"  trim 0 0.4
sox -D -n -r "$rate" -c 1 -b 16 "$tmp/pause.wav" trim 0 1.5
sox -D -n -r "$rate" -c 1 -b 16 "$tmp/tail.wav"  trim 0 0.6
sox -D "$tmp/lead.wav" "$tmp/one.wav" "$tmp/pause.wav" "$tmp/two.wav" "$tmp/tail.wav" \
    "$tmp/speech.wav"

# Telephone band, -3 dBFS peak, 8 kHz, 8-bit μ-law, mono; -D: no dither (reproducible).
sox --single-threaded -D "$tmp/speech.wav" -r 8000 -c 1 -e u-law -b 8 "$out" sinc 300-3400 norm -3

sox --i "$out"

#!/usr/bin/env bash
# Make stages/telephony/data/unavailable_8k_ulaw.wav: what a caller hears when the model cannot
# be reached ("Sorry, the assistant is not available right now. Please call again later."),
# as an 8 kHz μ-law WAV, the format a phone line carries. pipeline serve ships the file and
# plays it (--unavailable-wav); nothing is synthesized at run time.
#
# Needs espeak-ng and sox (Debian/Ubuntu: apt-get install -y espeak-ng sox). -D turns off
# sox's dither, so the output is reproducible for a given espeak-ng/sox version.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/unavailable_8k_ulaw.wav}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

espeak-ng -v en-us -s 165 -w "$tmp/say.wav" \
    "Sorry, the assistant is not available right now. Please call again later."
# Telephone band, -3 dBFS peak, 8 kHz, 8-bit μ-law, mono, 0.2 s of silence at each end.
sox --single-threaded -D "$tmp/say.wav" -r 8000 -c 1 -e u-law -b 8 "$out" \
    sinc 300-3400 norm -3 pad 0.2 0.2

sox --i "$out"

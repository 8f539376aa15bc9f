#!/usr/bin/env bash
# Set up (if needed) and run one real tutoring session on the embedded offline stack: a real
# LibriVox recording is the student pilot's answer, the DPE examiner persona replies by voice.
# Prints the learner's transcript and the tutor's reply; writes out/demo/{transcript.json,
# bot.wav,conversation.wav}.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
CLIP=/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav
exec .venv/bin/voxtutor session --persona aviation-examiner --audio "$CLIP" --out out/demo "$@"

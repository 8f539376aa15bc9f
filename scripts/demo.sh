#!/usr/bin/env bash
# Set up (if needed) and run one real tutoring session on the embedded offline stack: the German
# tutor greets, a typed learner sentence with a planted error (no microphone: --say) is
# assessed, and the tutor's spoken reply starts with the checked correction. Prints the turns;
# writes out/demo/{transcript.json,bot.wav,conversation.wav}.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/voxtutor session --persona german-tutor \
  --say "Ich fahre jeden Tag mit der Bus zur Arbeit." --out out/demo "$@"

"""Ground-level contracts every layer may import: plain data and protocols, no behaviour.

A session's pieces meet here without reaching up the layers (README, "Architecture"):
:mod:`contracts.turns` (one turn of a conversation, as recorded and stored),
:mod:`contracts.events` (the kinds of session event), :mod:`contracts.session_spec` (what a
session process is told to run) and :mod:`contracts.writer` (what a session writes to the
store, which the store and a session process's relay both accept). Nothing here imports
another voxtutor package.
"""

"""Session processes: the server runs each tutoring session in an OS process of its own.

Pipecat's guidance is one call per process (several calls in one process degrade each
other). ``supervisor`` is the server's side (spawn, cap, idle end, failure detection);
``session_process`` is the entry point of one session process (``realtime_process`` its
speech-to-speech part); ``protocol`` the JSON lines between them; ``store_relay`` the
process's store writes, which the server applies.
"""

"""Session processes: the server runs each tutoring session in a process of its own.

Pipecat's guidance is one call per process (several calls in one process degrade each
other). ``supervisor`` is the server's side (spawn, cap, idle end, failure detection);
``worker`` is the entry point of one session process.
"""

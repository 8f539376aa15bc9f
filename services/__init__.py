"""Speech services voxtutor adds to Pipecat's.

Local TTS engines and the local LLM server supervisor.
"""

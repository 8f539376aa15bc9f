"""The HTTP API of voxtutor (FastAPI): learners, sessions, WebRTC signalling, catalog, ops.

``server.create_app`` assembles the application from these modules; each ``routes_*`` module
is one router under ``/api/v1``.
"""

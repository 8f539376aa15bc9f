"""Alembic migrations of the voxtutor store (run with :func:`store.migrate`)."""

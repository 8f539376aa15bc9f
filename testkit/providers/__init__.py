"""Loopback fakes of the cloud providers, speaking their wire protocols (see base.py)."""

"""Sinks for capture files."""

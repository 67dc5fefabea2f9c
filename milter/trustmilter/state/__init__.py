"""Shared state: rate counters and learned sender reputation, on SQLite or Redis."""

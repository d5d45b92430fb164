"""Engines in other languages: programs speaking the process protocol (docs/process-protocol.md)."""

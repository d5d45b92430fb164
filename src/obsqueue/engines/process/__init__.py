"""Engines in other languages: programs that speak the process protocol (docs/process-protocol.md)."""

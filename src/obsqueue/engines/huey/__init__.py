"""Huey adapters: on Redis and on SQLite (``engine.py``), with obsqueue's glue tables (``glue.py``,
``stores.py``).
"""

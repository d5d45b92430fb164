"""Huey adapters (driver: huey): the protocol both share (``engine.py``, over ``glue.py``), and one
variant per storage — ``redis_engine.py`` + ``redis_store.py`` (imports redis) and
``sqlite_engine.py`` + ``sqlite_store.py`` (imports no Redis client).
"""

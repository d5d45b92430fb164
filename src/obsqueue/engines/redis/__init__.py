"""The Redis family's shared layer — ``link.py`` (pool, calls, errors), ``family.py`` (what every
Redis engine holds), ``lua/`` (``lib.lua`` plus one ``<family>_*.lua`` set per engine) — and the
native Redis engine, ``engine.py`` (driver: redis-py).
"""

"""The Redis family's shared layer (``link.py``, ``lua/``) and the native Redis engine (driver:
redis-py).
"""

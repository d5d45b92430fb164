"""RQ adapter: RQ's own queues and job hashes, plus the glue listed in ``engine.py`` (drivers: rq,
redis-py).
"""

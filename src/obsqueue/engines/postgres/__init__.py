"""PostgreSQL engine: ``FOR UPDATE SKIP LOCKED`` claims, LISTEN/NOTIFY wakeup
(driver: psycopg 3).
"""

"""SQLite engine: one WAL file shared by threads and processes (driver: the stdlib ``sqlite3``)."""

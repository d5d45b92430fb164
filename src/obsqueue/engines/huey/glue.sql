-- glue.sql: the glue tables obsqueue keeps beside Huey's own tables (task, schedule, kv,
-- counter) in the same SQLite file, for huey+sqlite://. One row set per namespace (ns).
-- Every statement runs inside a BEGIN IMMEDIATE transaction opened by huey/sqlite_store.py.

-- create_meta --
CREATE TABLE IF NOT EXISTS obsq_huey_meta (
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (ns, name)
)

-- create_slot --
CREATE TABLE IF NOT EXISTS obsq_huey_slot (
    ns TEXT NOT NULL,
    session TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (ns, session)
)

-- create_env --
CREATE TABLE IF NOT EXISTS obsq_huey_env (
    ns TEXT NOT NULL,
    id INTEGER NOT NULL,
    env TEXT NOT NULL,
    PRIMARY KEY (ns, id)
)

-- create_dead --
CREATE TABLE IF NOT EXISTS obsq_huey_dead (
    ns TEXT NOT NULL,
    id INTEGER NOT NULL,
    session TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (ns, id)
)

-- create_dedupe --
CREATE TABLE IF NOT EXISTS obsq_huey_dedupe (
    ns TEXT NOT NULL,
    csid TEXT NOT NULL,
    tuid TEXT NOT NULL,
    id INTEGER NOT NULL,
    session TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (ns, csid, tuid)
)

-- next_value --
INSERT INTO obsq_huey_meta (ns, name, value) VALUES (?, ?, 1)
ON CONFLICT (ns, name) DO UPDATE SET value = value + 1
RETURNING value

-- register_session --
INSERT OR IGNORE INTO obsq_huey_slot (ns, session, doc) VALUES (?, ?, '{}')

-- read_slot --
SELECT doc FROM obsq_huey_slot WHERE ns = ? AND session = ?

-- write_slot --
INSERT INTO obsq_huey_slot (ns, session, doc) VALUES (?, ?, ?)
ON CONFLICT (ns, session) DO UPDATE SET doc = excluded.doc

-- list_slots --
SELECT session, doc FROM obsq_huey_slot WHERE ns = ? ORDER BY session

-- read_dedupe --
SELECT id, session, at_ms FROM obsq_huey_dedupe WHERE ns = ? AND csid = ? AND tuid = ?

-- write_dedupe --
INSERT OR REPLACE INTO obsq_huey_dedupe (ns, csid, tuid, id, session, at_ms)
VALUES (?, ?, ?, ?, ?, ?)

-- forget_dedupe --
DELETE FROM obsq_huey_dedupe WHERE ns = ? AND csid = ? AND tuid = ? AND id = ?

-- put_env --
INSERT OR REPLACE INTO obsq_huey_env (ns, id, env) VALUES (?, ?, ?)

-- drop_env --
DELETE FROM obsq_huey_env WHERE ns = ? AND id = ?

-- read_envs --
SELECT id, env FROM obsq_huey_env WHERE ns = ? AND id IN (SELECT value FROM json_each(?))

-- bury --
INSERT OR REPLACE INTO obsq_huey_dead (ns, id, session, attempt, error) VALUES (?, ?, ?, ?, ?)

-- list_dead --
SELECT id, session, attempt, error FROM obsq_huey_dead WHERE ns = ? ORDER BY id

-- huey_tasks --
SELECT data FROM task WHERE queue = ? ORDER BY priority DESC, id

-- destroy_meta --
DELETE FROM obsq_huey_meta WHERE ns = ?

-- destroy_slot --
DELETE FROM obsq_huey_slot WHERE ns = ?

-- destroy_env --
DELETE FROM obsq_huey_env WHERE ns = ?

-- destroy_dead --
DELETE FROM obsq_huey_dead WHERE ns = ?

-- destroy_dedupe --
DELETE FROM obsq_huey_dedupe WHERE ns = ?

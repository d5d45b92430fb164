-- The raw PostgreSQL reference of the drain benchmark: the fewest statements that still claim
-- (so a crash between claim and delete leaves the row visible) and then delete, each one
-- autocommitted — the "two-statement loop" the engine's one-statement ack-and-claim is held to.
-- {table} is a psycopg.sql.Identifier.
-- The harness's ceiling targets (benchmarks/peers/raw_sql.py) use the same claim-then-delete
-- from any session (claim_any) or from a set of sessions (claim_among), with the payload
-- kept as text, byte for byte, as the engine keeps it (create_ceiling).

-- create --
CREATE TABLE IF NOT EXISTS {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    payload jsonb NOT NULL
)

-- index --
CREATE INDEX IF NOT EXISTS {index} ON {table} (session_id, id)

-- enqueue --
INSERT INTO {table} (session_id, payload) VALUES (%(session_id)s, %(payload)s)

-- claim --
UPDATE {table} SET status = 'processing'
WHERE id = (
    SELECT id FROM {table}
    WHERE session_id = %(session_id)s AND status = 'pending'
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, payload

-- delete --
DELETE FROM {table} WHERE id = %(id)s

-- drop --
DROP TABLE IF EXISTS {table}

-- create_ceiling --
CREATE TABLE IF NOT EXISTS {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    payload text NOT NULL
)

-- claim_any --
UPDATE {table} SET status = 'processing'
WHERE id = (
    SELECT id FROM {table} WHERE status = 'pending'
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, session_id, payload

-- claim_among --
UPDATE {table} SET status = 'processing'
WHERE id = (
    SELECT id FROM {table} WHERE session_id = ANY(%(sessions)s) AND status = 'pending'
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, session_id, payload

-- count --
SELECT count(*) FROM {table}

-- empty --
TRUNCATE {table}

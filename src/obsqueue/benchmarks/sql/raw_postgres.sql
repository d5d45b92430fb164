-- The raw PostgreSQL reference of the drain benchmark: the fewest statements that still claim
-- (so a crash between claim and delete leaves the row visible) and then delete, each one
-- autocommitted — the "two-statement loop" the engine's one-statement ack-and-claim is held to.
-- {table} is a psycopg.sql.Identifier.

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

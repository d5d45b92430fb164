-- The raw SQLite reference of the drain benchmark: the same claim-then-delete loop as the
-- engine's, with no leases, tokens, dedupe or wakeup. {table} is a checked identifier.
-- The harness's ceiling targets (benchmarks/peers/raw_sql.py) use the same claim-then-delete
-- from any session (claim_any) or from a set of sessions (claim_among) given as a JSON array.

-- create --
CREATE TABLE IF NOT EXISTS "{table}" (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS "{table}_session" ON "{table}" (session_id, id)

-- enqueue --
INSERT INTO "{table}" (session_id, payload) VALUES (:session_id, :payload)

-- claim --
UPDATE "{table}" SET status = 'processing'
WHERE id = (
    SELECT id FROM "{table}" WHERE session_id = :session_id AND status = 'pending'
    ORDER BY id LIMIT 1
)
RETURNING id, payload

-- delete --
DELETE FROM "{table}" WHERE id = :id

-- drop --
DROP TABLE IF EXISTS "{table}"

-- claim_any --
UPDATE "{table}" SET status = 'processing'
WHERE id = (SELECT id FROM "{table}" WHERE status = 'pending' ORDER BY id LIMIT 1)
RETURNING id, session_id, payload

-- claim_among --
UPDATE "{table}" SET status = 'processing'
WHERE id = (
    SELECT id FROM "{table}"
    WHERE session_id IN (SELECT value FROM json_each(:sessions)) AND status = 'pending'
    ORDER BY id LIMIT 1
)
RETURNING id, session_id, payload

-- count --
SELECT count(*) FROM "{table}"

-- empty --
DELETE FROM "{table}"

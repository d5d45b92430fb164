-- Queries of the sqlite:// engine (obsqueue.engines.sqlite), one per named section.
--
-- Placeholders, replaced once per engine: {ns} (the namespace, an ASCII identifier checked by
-- EngineOptions) and {synchronous} (one of OFF, NORMAL, FULL, EXTRA, checked by the engine).
-- Everything else is static text with bound :named parameters.
--
-- Invariants the statements keep (see the module docstring):
-- * ids come from AUTOINCREMENT: increasing in commit order, never reused in the table's life;
-- * the head of a session is its lowest-id row that is pending or processing; only the head is
--   claimed, and claims run inside BEGIN IMMEDIATE, so one writer at a time decides;
-- * at most one row per session is 'processing' (a partial unique index guards it);
-- * every claim draws a new token from the one-row tokens table; acks, failures and extensions
--   name their token in the WHERE clause, and a statement that matched no row means "stale";
-- * queries that read live rows repeat the exact predicate status IN ('pending', 'processing')
--   of the partial indexes, so that SQLite's planner can use them.

-- set_synchronous --
PRAGMA synchronous = {synchronous}

-- enable_wal --
PRAGMA journal_mode = WAL

-- data_version --
PRAGMA data_version

-- durability --
SELECT (SELECT journal_mode FROM pragma_journal_mode) AS journal_mode,
       (SELECT synchronous FROM pragma_synchronous) AS synchronous,
       (SELECT timeout FROM pragma_busy_timeout) AS busy_timeout_ms

-- begin_write --
BEGIN IMMEDIATE

-- commit --
COMMIT

-- rollback --
ROLLBACK

-- create_schema --
CREATE TABLE IF NOT EXISTS "{ns}_messages_v1" (
    -- AUTOINCREMENT: an id is never handed out twice, even after the highest row is deleted
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    content_session_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    tool_use_id TEXT,
    payload TEXT NOT NULL,  -- the compact JSON text encode_message produced
    original_timestamp INTEGER NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'dead')),
    attempt INTEGER NOT NULL DEFAULT 0,
    available_at_ms INTEGER NOT NULL DEFAULT 0,
    claim_token INTEGER,
    lease_expires_at_ms INTEGER,
    consumer_id TEXT,
    last_error TEXT
);
-- the head of a session, pending counts and total depth
CREATE INDEX IF NOT EXISTS "{ns}_messages_v1_head" ON "{ns}_messages_v1" (session_id, id)
    WHERE status IN ('pending', 'processing');
-- the race-proof guard of P2: one row in flight per session, whatever the claim logic does
CREATE UNIQUE INDEX IF NOT EXISTS "{ns}_messages_v1_one_in_flight"
    ON "{ns}_messages_v1" (session_id) WHERE status = 'processing';
-- dedupe while pending or in flight (P3)
CREATE UNIQUE INDEX IF NOT EXISTS "{ns}_messages_v1_dedupe"
    ON "{ns}_messages_v1" (content_session_id, tool_use_id)
    WHERE tool_use_id IS NOT NULL AND status IN ('pending', 'processing');
-- fencing tokens: one row, bumped by every claim
CREATE TABLE IF NOT EXISTS "{ns}_tokens_v1" (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    last_token INTEGER NOT NULL
);
INSERT OR IGNORE INTO "{ns}_tokens_v1" (one, last_token) VALUES (1, 0)

-- drop_schema --
DROP TABLE IF EXISTS "{ns}_messages_v1";
DROP TABLE IF EXISTS "{ns}_tokens_v1"

-- find_duplicate --
SELECT id FROM "{ns}_messages_v1"
WHERE content_session_id = :content_session_id AND tool_use_id = :tool_use_id
  AND tool_use_id IS NOT NULL AND status IN ('pending', 'processing')

-- insert --
INSERT INTO "{ns}_messages_v1"
    (session_id, content_session_id, kind, tool_use_id, payload, original_timestamp,
     enqueued_at_ms)
VALUES (:session_id, :content_session_id, :kind, :tool_use_id, :payload, :original_timestamp,
        :enqueued_at_ms)
-- the dedupe index's own predicate: a live duplicate inserts nothing and returns no row (a
-- message without a tool_use_id never conflicts), so a new message is one statement
ON CONFLICT (content_session_id, tool_use_id)
    WHERE tool_use_id IS NOT NULL AND status IN ('pending', 'processing') DO NOTHING
RETURNING id

-- head --
SELECT id, status, attempt, available_at_ms, lease_expires_at_ms
FROM "{ns}_messages_v1"
WHERE session_id = :session_id AND status IN ('pending', 'processing')
ORDER BY id
LIMIT 1

-- next_tokens --
-- :n new tokens for :n claims of one transaction: last_token - :n + 1 .. last_token
UPDATE "{ns}_tokens_v1" SET last_token = last_token + :n WHERE one = 1 RETURNING last_token

-- sessions_with_work --
-- The sessions with a message pending or in flight, by session id: a skip scan of the head index
-- (one seek per session, not one step per message).
WITH RECURSIVE sessions(session_id) AS (
    SELECT min(session_id) FROM "{ns}_messages_v1" WHERE status IN ('pending', 'processing')
    UNION ALL
    SELECT (SELECT min(m.session_id) FROM "{ns}_messages_v1" AS m
            WHERE m.status IN ('pending', 'processing') AND m.session_id > sessions.session_id)
    FROM sessions WHERE sessions.session_id IS NOT NULL
)
SELECT session_id FROM sessions WHERE session_id IS NOT NULL

-- due_heads --
-- The heads of the sessions in :sids (a JSON array of session ids) that can be claimed (or, out
-- of attempts, killed) at :now: pending and due, or in flight with the lease run out. At most
-- :limit, oldest head first when :by_age, else in the array's order. One head lookup on the
-- head index per session.
SELECT m.id, m.session_id, m.status, m.attempt, m.available_at_ms, m.lease_expires_at_ms
FROM json_each(:sids) AS s
JOIN "{ns}_messages_v1" AS m ON m.id = (
    SELECT h.id FROM "{ns}_messages_v1" AS h
    WHERE h.session_id = s.value AND h.status IN ('pending', 'processing')
    ORDER BY h.id
    LIMIT 1)
WHERE CASE m.status WHEN 'processing' THEN m.lease_expires_at_ms ELSE m.available_at_ms END
      <= :now
ORDER BY CASE WHEN :by_age THEN m.id ELSE s.key END
LIMIT :limit

-- claim --
UPDATE "{ns}_messages_v1"
SET status = 'processing', attempt = attempt + 1, claim_token = :token,
    lease_expires_at_ms = :lease_expires_at_ms, consumer_id = :consumer_id
WHERE id = :id
RETURNING id, session_id, content_session_id, kind, tool_use_id, payload, original_timestamp,
          enqueued_at_ms, attempt, claim_token, lease_expires_at_ms, consumer_id

-- kill --
UPDATE "{ns}_messages_v1"
SET status = 'dead', claim_token = NULL, lease_expires_at_ms = NULL, last_error = :reason
WHERE id = :id

-- ack --
DELETE FROM "{ns}_messages_v1"
WHERE id = :id AND status = 'processing' AND claim_token = :token

-- unclaim --
-- Give back a head claimed with an ack but never handed out (engines/handoff.py): the row
-- returns to the state it was claimed from, attempt included.
UPDATE "{ns}_messages_v1"
SET status = 'pending', attempt = attempt - 1, claim_token = NULL, lease_expires_at_ms = NULL,
    consumer_id = NULL
WHERE id = :id AND status = 'processing' AND claim_token = :token

-- fail --
UPDATE "{ns}_messages_v1"
SET status = :status, available_at_ms = :available_at_ms, claim_token = NULL,
    lease_expires_at_ms = NULL, last_error = :reason
WHERE id = :id AND status = 'processing' AND claim_token = :token

-- extend --
UPDATE "{ns}_messages_v1"
SET lease_expires_at_ms = :lease_expires_at_ms
WHERE id = :id AND status = 'processing' AND claim_token = :token
RETURNING lease_expires_at_ms, consumer_id

-- pending_count --
SELECT count(*) FROM "{ns}_messages_v1"
WHERE session_id = :session_id AND status IN ('pending', 'processing')

-- total_depth --
SELECT count(*) FROM "{ns}_messages_v1" WHERE status IN ('pending', 'processing')

-- clear_pending --
-- the IN term is redundant; it lets the planner use the head index instead of a table scan
DELETE FROM "{ns}_messages_v1"
WHERE session_id = :session_id AND status IN ('pending', 'processing') AND status = 'pending'

-- reset_session --
UPDATE "{ns}_messages_v1"
SET status = 'pending', claim_token = NULL, lease_expires_at_ms = NULL, available_at_ms = 0
WHERE session_id = :session_id AND status = 'processing'

-- reset_all --
UPDATE "{ns}_messages_v1"
SET status = 'pending', claim_token = NULL, lease_expires_at_ms = NULL, available_at_ms = 0
WHERE status = 'processing'

-- inspect --
SELECT id, session_id, content_session_id, kind, tool_use_id, payload, original_timestamp,
       status, attempt, claim_token, lease_expires_at_ms, last_error
FROM "{ns}_messages_v1"
ORDER BY id

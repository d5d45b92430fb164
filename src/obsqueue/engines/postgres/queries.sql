-- Queries of the postgresql:// engine (obsqueue.engines.postgres), one per named section.
--
-- Placeholders, filled with psycopg.sql.Identifier once per engine: {schema} (the namespace),
-- {messages} (the versioned messages table), {tokens} (the fencing-token sequence),
-- {version_table}. Everything else is static text with bound parameters.
--
-- Invariants the statements keep (see the module docstring):
-- * the head of a session is its lowest-id row that is not dead; only the head is claimed;
-- * at most one row per session is 'processing' (a partial unique index guards it);
-- * every claim takes a new token from {tokens}; acks, failures and extensions name their token;
-- * times come from the server clock (now()), and leave as epoch milliseconds.

-- version_table_exists --
SELECT to_regclass(%(version_table)s) IS NOT NULL

-- schema_version --
SELECT coalesce(max(version), 0) FROM {version_table}

-- migrate_lock --
SELECT pg_advisory_xact_lock(hashtextextended(%(lock_name)s, 0))

-- migrate_prepare --
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {version_table} (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- migrate_done --
INSERT INTO {version_table} (version) VALUES (%(version)s) ON CONFLICT DO NOTHING

-- migrate_v1 --
CREATE TABLE {messages} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id text NOT NULL,
    content_session_id text NOT NULL,
    kind text NOT NULL,
    tool_use_id text,
    -- sha256 of content_session_id, NUL, tool_use_id (computed by the engine; NULL without a
    -- tool_use_id): ids of up to 512 characters each would not fit a btree entry themselves
    dedupe_key bytea,
    payload text NOT NULL,
    original_timestamp bigint NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'dead')),
    attempt integer NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT '-infinity',
    claim_token bigint,
    lease_expires_at timestamptz,
    consumer_id text,
    last_error text
);
-- the head of a session, and the rows of a session in order
CREATE INDEX obsq_messages_v1_session ON {messages} (session_id, id) WHERE status <> 'dead';
-- the race-proof guard of P2: one row in flight per session, whatever the claim query does
CREATE UNIQUE INDEX obsq_messages_v1_one_in_flight ON {messages} (session_id)
    WHERE status = 'processing';
-- dedupe while pending or in flight (P3)
CREATE UNIQUE INDEX obsq_messages_v1_dedupe ON {messages} (dedupe_key)
    WHERE status <> 'dead' AND dedupe_key IS NOT NULL;
CREATE SEQUENCE {tokens} AS bigint

-- enqueue --
-- The advisory lock serialises enqueues of one session until commit, so ids (drawn from the
-- identity after the lock) increase in commit order within a session: a claimer can never see a
-- session's later message while an earlier one is still uncommitted. pg_notify is sent on commit.
WITH session_lock AS (
    SELECT pg_advisory_xact_lock(hashtextextended(%(channel)s || ':' || %(session_id)s, 0))
), inserted AS (
    INSERT INTO {messages}
        (session_id, content_session_id, kind, tool_use_id, dedupe_key, payload,
         original_timestamp)
    SELECT %(session_id)s, %(content_session_id)s, %(kind)s, %(tool_use_id)s, %(dedupe_key)s,
           %(payload)s, %(original_timestamp)s
    FROM session_lock
    ON CONFLICT (dedupe_key) WHERE status <> 'dead' AND dedupe_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT id, pg_notify(%(channel)s, %(session_id)s)::text FROM inserted

-- find_duplicate --
SELECT id FROM {messages}
WHERE dedupe_key = %(dedupe_key)s AND status <> 'dead'

-- claimed_cte --
-- (A fragment, inserted as "claimed_cte" into the claim statements below.) Claims the rows of
-- "target": a new token, attempt + 1, a lease on the server clock. A head whose lease expired on
-- its last attempt becomes dead instead, and is left out of the result by the callers.
claimed AS (
    UPDATE {messages} m SET
        status = CASE WHEN t.out_of_attempts THEN 'dead' ELSE 'processing' END,
        attempt = CASE WHEN t.out_of_attempts THEN m.attempt ELSE m.attempt + 1 END,
        claim_token = CASE WHEN t.out_of_attempts THEN NULL ELSE nextval('{tokens}') END,
        lease_expires_at = CASE WHEN t.out_of_attempts THEN NULL
                                ELSE now() + make_interval(secs => %(lease_s)s) END,
        consumer_id = %(consumer_id)s,
        last_error = CASE WHEN t.out_of_attempts THEN 'lease expired on the last attempt'
                          ELSE m.last_error END
    FROM target t
    WHERE m.id = t.id
    RETURNING m.*
)

-- target_columns --
-- (A fragment: what the "target" CTEs select from the locked row m.)
m.id, m.status = 'processing' AND m.attempt >= %(max_attempts)s AS out_of_attempts

-- due --
-- (A fragment: the row m can be claimed now: pending and available, or its lease expired.)
((m.status = 'pending' AND m.available_at <= now())
 OR (m.status = 'processing' AND m.lease_expires_at <= now()))

-- delivered_columns --
-- (A fragment: a claimed row c as the engine turns it into a PendingMessageWithId.)
c.id, c.session_id, c.content_session_id, c.kind, c.tool_use_id, c.payload,
c.original_timestamp, c.attempt, c.claim_token,
(extract(epoch FROM c.lease_expires_at) * 1000)::bigint, c.consumer_id,
(extract(epoch FROM c.enqueued_at) * 1000)::bigint

-- head_claimed --
-- (A fragment: the CTEs after a "head" CTE that names one row: "target" locks it if it can be
-- claimed now (SKIP LOCKED) and "claimed" claims it.)
target AS (
    SELECT {target_columns} FROM {messages} m JOIN head USING (id)
    WHERE {due}
    FOR UPDATE OF m SKIP LOCKED
), {claimed_cte}

-- claim_next --
-- The head is found first, without locks (ORDER BY id LIMIT 1 over the session's rows that are
-- not dead); only that row is then locked, with SKIP LOCKED: if another claimer holds it, the
-- answer is "nothing", never the session's next row. If the head changed meanwhile (claimed or
-- acked by a transaction that committed), the recheck of the locking query's conditions against
-- the new row version drops it: again nothing.
WITH head AS (
    SELECT id FROM {messages}
    WHERE session_id = %(session_id)s AND status <> 'dead'
    ORDER BY id
    LIMIT 1
), {head_claimed}
SELECT {delivered_columns} FROM claimed c WHERE c.status = 'processing'

-- ack_and_claim_next --
-- One statement, one commit: delete the acknowledged row if its claim still holds, then claim
-- the session's next head exactly as claim_next does. Every part of a statement sees the same
-- snapshot, in which the deleted row is still there: the head is searched above its id (with the
-- session as a parameter, so the search is one ordered index probe, not a scan of the session).
-- Always one row: whether the ack matched (1 or 0), then the claimed message or NULLs.
WITH acked AS (
    DELETE FROM {messages}
    WHERE id = %(id)s AND claim_token = %(token)s AND status = 'processing'
    RETURNING id, session_id
), head AS (
    SELECT id FROM {messages}
    WHERE session_id = %(session_id)s AND status <> 'dead' AND id > %(id)s
      AND EXISTS (SELECT 1 FROM acked)
    ORDER BY id
    LIMIT 1
), {head_claimed}
SELECT (SELECT count(*) FROM acked), {delivered_columns}
FROM (SELECT 1) AS one LEFT JOIN claimed c ON c.status = 'processing'

-- claim_ready_heads --
-- Heads of up to "limit" sessions, oldest first: rows that are due and have no older row of
-- their session that is not dead. Locked rows are skipped — a session whose head another
-- claimer holds has no other row that passes the head test, so nothing of it is taken.
WITH target AS (
    SELECT {target_columns} FROM {messages} m
    WHERE {due}
      AND NOT EXISTS (
          SELECT 1 FROM {messages} p
          WHERE p.session_id = m.session_id AND p.status <> 'dead' AND p.id < m.id
      )
    ORDER BY m.id
    LIMIT %(limit)s
    FOR UPDATE OF m SKIP LOCKED
), {claimed_cte}
SELECT {delivered_columns} FROM claimed c WHERE c.status = 'processing' ORDER BY c.id

-- heads_after --
-- (A fragment: a recursive CTE, after "WITH RECURSIVE".) The heads of the sessions after
-- "after" in session order, one ordered probe of the session index per session: a skip scan
-- that jumps from each session to the first row of the next one, so its cost grows with the
-- number of sessions, never with their backlogs; evaluated only as far as it is read.
later AS (
    (SELECT session_id, id FROM {messages}
     WHERE status <> 'dead' AND session_id > %(after)s
     ORDER BY session_id, id
     LIMIT 1)
    UNION ALL
    SELECT nxt.session_id, nxt.id
    FROM later prev
    CROSS JOIN LATERAL (
        SELECT session_id, id FROM {messages}
        WHERE status <> 'dead' AND session_id > prev.session_id
        ORDER BY session_id, id
        LIMIT 1
    ) nxt
)

-- claim_heads_of --
-- The heads of up to "limit" distinct sessions of the array "sids", in the array's order (the
-- iterator rotates it: no session starves). Each session's head is found without locks (one
-- ordered index probe per session, as claim_next does), then only those rows are locked, with
-- SKIP LOCKED: a session whose head another claimer holds yields nothing, never its next row.
-- LIMIT above the lock: rows skipped or no longer due do not count, no more than "limit" rows
-- are locked, and the sessions are probed only until "limit" heads are locked (the plan is a
-- nested loop under the lock: EXPLAIN shows it). Each row says whether it is claimed (false:
-- made dead, so the caller can look again) and where a next round over every session would
-- start (NULL here; see claim_heads_any), then the message.
WITH heads AS (
    SELECT h.id, s.ord
    FROM unnest(%(sids)s::text[]) WITH ORDINALITY AS s(session_id, ord)
    CROSS JOIN LATERAL (
        SELECT id FROM {messages}
        WHERE session_id = s.session_id AND status <> 'dead'
        ORDER BY id
        LIMIT 1
    ) h
), target AS (
    SELECT {target_columns} FROM {messages} m JOIN heads USING (id)
    WHERE {due}
    ORDER BY heads.ord
    LIMIT %(limit)s
    FOR UPDATE OF m SKIP LOCKED
), {claimed_cte}
SELECT c.status = 'processing', NULL::text, {delivered_columns} FROM claimed c

-- claim_heads_any --
-- The heads of up to "limit" distinct sessions of the whole namespace, taking sessions in turn:
-- those after "after" (the last session the engine's previous round claimed) in session order,
-- then, wrapping round, the others from the first, each lap a skip scan (heads_after). No ORDER
-- BY: a sort would need every session's head first; the laps are read in order and only until
-- "limit" heads are locked, so a round costs about "limit" probes whatever the number of
-- sessions. Claimed as claim_heads_of claims; each row also names the session the next round
-- starts after.
WITH RECURSIVE {heads_after}, earlier AS (
    (SELECT session_id, id FROM {messages}
     WHERE status <> 'dead' AND session_id <= %(after)s
     ORDER BY session_id, id
     LIMIT 1)
    UNION ALL
    SELECT nxt.session_id, nxt.id
    FROM earlier prev
    CROSS JOIN LATERAL (
        SELECT session_id, id FROM {messages}
        WHERE status <> 'dead' AND session_id > prev.session_id AND session_id <= %(after)s
        ORDER BY session_id, id
        LIMIT 1
    ) nxt
), heads AS (
    SELECT 0 AS lap, id FROM later
    UNION ALL
    SELECT 1 AS lap, id FROM earlier
), target AS (
    SELECT {target_columns}, m.session_id, heads.lap FROM heads JOIN {messages} m USING (id)
    WHERE {due}
    LIMIT %(limit)s
    FOR UPDATE OF m SKIP LOCKED
), {claimed_cte}
SELECT c.status = 'processing',
       -- where the next round starts: the furthest session of the laps this one took
       (SELECT session_id FROM target ORDER BY lap DESC, session_id DESC LIMIT 1),
       {delivered_columns}
FROM claimed c

-- sessions_with_work --
-- Every session with a message pending or in flight: the skip scan above from the start
-- ("after" is '': session ids are never empty), one probe per session.
WITH RECURSIVE {heads_after}
SELECT session_id FROM later

-- unclaim --
-- Give back a claim that was never handed to the caller (a prefetched head, see the module
-- docstring): the row returns to exactly the state it was claimed from, attempt included.
UPDATE {messages}
SET status = 'pending', attempt = attempt - 1, claim_token = NULL, lease_expires_at = NULL,
    consumer_id = NULL, available_at = '-infinity'
WHERE id = %(id)s AND claim_token = %(token)s AND status = 'processing'

-- unclaim_many --
-- unclaim for several claims at once (the arrays "ids" and "tokens" pair up); the sessions
-- given back are notified, so consumers in other processes take them at once.
WITH given_back AS (
    UPDATE {messages} m
    SET status = 'pending', attempt = m.attempt - 1, claim_token = NULL,
        lease_expires_at = NULL, consumer_id = NULL, available_at = '-infinity'
    FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[]) AS g(id, token)
    WHERE m.id = g.id AND m.claim_token = g.token AND m.status = 'processing'
    RETURNING m.session_id
)
SELECT count(pg_notify(%(channel)s, session_id))
FROM (SELECT DISTINCT session_id FROM given_back) s

-- mark_processed --
DELETE FROM {messages}
WHERE id = %(id)s AND claim_token = %(token)s AND status = 'processing'
RETURNING id

-- mark_failed --
UPDATE {messages}
SET status = CASE WHEN %(retry)s AND attempt < %(max_attempts)s THEN 'pending' ELSE 'dead' END,
    available_at = now() + make_interval(secs => %(delay_ms)s / 1000.0),
    claim_token = NULL,
    lease_expires_at = NULL,
    last_error = %(reason)s
WHERE id = %(id)s AND claim_token = %(token)s AND status = 'processing'
RETURNING status

-- extend_lease --
UPDATE {messages}
SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
WHERE id = %(id)s AND claim_token = %(token)s AND status = 'processing'
RETURNING (extract(epoch FROM lease_expires_at) * 1000)::bigint, consumer_id

-- pending_count --
SELECT count(*) FROM {messages} WHERE session_id = %(session_id)s AND status <> 'dead'

-- total_depth --
SELECT count(*) FROM {messages} WHERE status <> 'dead'

-- clear_pending --
DELETE FROM {messages} WHERE session_id = %(session_id)s AND status = 'pending'

-- reset_processing --
-- Back to pending at the same place, claim voided (acks under it raise StaleClaimError); the
-- sessions that got a message back are woken.
-- Rows are locked in id order first, so two resets at once cannot deadlock.
WITH locked AS (
    SELECT id FROM {messages}
    WHERE status = 'processing'
      AND (%(session_id)s::text IS NULL OR session_id = %(session_id)s::text)
    ORDER BY id
    FOR UPDATE
), moved AS (
    UPDATE {messages} m
    SET status = 'pending', claim_token = NULL, lease_expires_at = NULL,
        available_at = '-infinity'
    FROM locked
    WHERE m.id = locked.id AND m.status = 'processing'
    RETURNING m.session_id
), woken AS (
    SELECT pg_notify(%(channel)s, session_id) FROM (SELECT DISTINCT session_id FROM moved) s
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM woken)

-- inspect_raw --
SELECT id, session_id, content_session_id, kind, tool_use_id, payload, original_timestamp,
       status, attempt, claim_token,
       CASE WHEN claim_token IS NOT NULL
            THEN (extract(epoch FROM lease_expires_at) * 1000)::bigint END,
       last_error
FROM {messages}
ORDER BY id

-- server_settings --
SELECT current_setting('server_version'), current_setting('server_version_num')::int,
       current_setting('fsync'), current_setting('synchronous_commit'),
       current_setting('full_page_writes'), current_setting('wal_sync_method'),
       current_setting('synchronous_standby_names')

-- destroy --
DROP SCHEMA IF EXISTS {schema} CASCADE

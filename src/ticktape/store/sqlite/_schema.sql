-- ticktape SQLite schema, applied by versioned migrations in _db.py.
-- Each block below, headed by its migration number, runs once, in order, in one transaction.

-- migration: 1
-- Sessions: one row each. `sid` is a compact integer key the tick tables use
-- instead of repeating the 36-character session id in every row.
CREATE TABLE sessions (
    sid             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    symbols         TEXT NOT NULL,          -- JSON array
    exchange        TEXT NOT NULL,
    data_types      TEXT NOT NULL,          -- JSON array
    config          TEXT NOT NULL,          -- JSON object (SessionConfig)
    created_us      INTEGER NOT NULL,
    started_us      INTEGER,
    ended_us        INTEGER,
    reason          TEXT,
    trades          INTEGER NOT NULL DEFAULT 0,
    orderbook       INTEGER NOT NULL DEFAULT 0,
    errors          INTEGER NOT NULL DEFAULT 0,
    owner           TEXT,
    lease_us        INTEGER,
    version         INTEGER NOT NULL,
    deleted         INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX sessions_newest ON sessions (created_us DESC, id DESC);
CREATE INDEX sessions_active ON sessions (status) WHERE status IN ('pending', 'running', 'stopping');

-- The transition history: append-only.
CREATE TABLE session_events (
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at_us       INTEGER NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    detail      TEXT,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;

-- Trades: identified by (session, symbol, trade id), so a replayed batch is ignored.
CREATE TABLE trades (
    sid      INTEGER NOT NULL,
    symbol   TEXT NOT NULL,
    trade_id INTEGER NOT NULL,
    ts_us    INTEGER NOT NULL,
    price    REAL NOT NULL,
    qty      REAL NOT NULL,
    side     INTEGER NOT NULL,              -- +1 buy, -1 sell
    PRIMARY KEY (sid, symbol, trade_id)
) WITHOUT ROWID;
CREATE INDEX trades_by_time ON trades (sid, ts_us);

-- Order-book snapshots: one row per snapshot. The best level is in plain columns
-- for SQL queries; every level is in float64 little-endian blobs (exact round-trip,
-- one row per snapshot keeps ingestion fast).
CREATE TABLE orderbook (
    sid       INTEGER NOT NULL,
    symbol    TEXT NOT NULL,
    ts_us     INTEGER NOT NULL,
    depth     INTEGER NOT NULL,
    best_bid  REAL NOT NULL,
    best_ask  REAL NOT NULL,
    bid_price BLOB NOT NULL,
    bid_qty   BLOB NOT NULL,
    ask_price BLOB NOT NULL,
    ask_qty   BLOB NOT NULL,
    PRIMARY KEY (sid, symbol, ts_us)
) WITHOUT ROWID;
CREATE INDEX orderbook_by_time ON orderbook (sid, ts_us);

-- migration: 2
-- The change feed (SessionStore.list_changed): every write of a session row gives it
-- the next change number. SQLite runs one write transaction at a time, so the numbers
-- follow commit order and a reader never sees a number before a smaller one.
ALTER TABLE sessions ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX sessions_changed ON sessions (change_seq);
CREATE TRIGGER sessions_change_on_insert AFTER INSERT ON sessions BEGIN UPDATE sessions SET change_seq = (SELECT max(change_seq) FROM sessions) + 1 WHERE sid = NEW.sid; END;
CREATE TRIGGER sessions_change_on_update AFTER UPDATE OF status, version, owner, lease_us, trades, orderbook, errors, deleted ON sessions BEGIN UPDATE sessions SET change_seq = (SELECT max(change_seq) FROM sessions) + 1 WHERE sid = NEW.sid; END;

-- migration: 3
-- Gaps of a recording (ticktape.feeds.contract.Gap): what a feed knows it did not
-- deliver, per symbol and data type, with its bounds (exchange µs), cause and the
-- messages known lost (NULL: the exchange does not number them).
CREATE TABLE gaps (
    sid       INTEGER NOT NULL,
    symbol    TEXT NOT NULL,
    data_type TEXT NOT NULL,
    start_us  INTEGER NOT NULL,
    end_us    INTEGER NOT NULL,
    cause     TEXT NOT NULL,
    lost      INTEGER,
    detail    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (sid, start_us, symbol, data_type, cause)
) WITHOUT ROWID;
-- The local receive time of each tick (µs since the epoch; NULL for rows stored before).
ALTER TABLE trades ADD COLUMN recv_us INTEGER;
ALTER TABLE orderbook ADD COLUMN recv_us INTEGER;
-- migration: 4
-- Results of backtest and paper sessions (ResultStore): one summary row per session and
-- its orders, fills and equity points as canonical JSON lines numbered 0, 1, ... A write
-- replaces all four in one transaction, fenced by the session's owner like tick writes.
CREATE TABLE result_summary (
    sid        INTEGER PRIMARY KEY,
    hash       TEXT NOT NULL,
    status     TEXT NOT NULL,
    summary    TEXT NOT NULL,               -- JSON object
    orders     INTEGER NOT NULL,
    fills      INTEGER NOT NULL,
    equity     INTEGER NOT NULL,
    written_us INTEGER NOT NULL
);
CREATE TABLE result_orders (
    sid  INTEGER NOT NULL,
    seq  INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (sid, seq)
) WITHOUT ROWID;
CREATE TABLE result_fills (
    sid  INTEGER NOT NULL,
    seq  INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (sid, seq)
) WITHOUT ROWID;
CREATE TABLE result_equity (
    sid  INTEGER NOT NULL,
    seq  INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (sid, seq)
) WITHOUT ROWID;
-- migration: 5
-- Instance leases (SessionStore.renew_instance): one row per owner token, renewed once
-- per heartbeat whatever the number of sessions it owns. A non-terminal session with a
-- lease of its own is covered until the later of that lease and its owner's row's;
-- `progress` is the owner's published stats of its sessions, JSON {"<id>": [t, o, e]}.
CREATE TABLE instances (
    token      TEXT PRIMARY KEY,
    expires_us INTEGER NOT NULL,
    progress   TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;
-- Listing by status newest first (GET /api/sessions?status=running) and counting by
-- status read only the matching sessions, however long the history of finished ones
-- (bench/capacity.py: 360 ms for 10 running among 100,000 finished without it).
CREATE INDEX sessions_by_status ON sessions (status, created_us, id);
-- migration: 6
-- Retention (SessionStore.find_finished, `ticktape gc`): finished sessions by end time,
-- so finding those past the retention reads only them, however long the history.
CREATE INDEX sessions_ended ON sessions (ended_us, id) WHERE ended_us IS NOT NULL;
-- migration: 10
-- Results appended as a backtest runs (ResultStore.append): the summary row names the
-- run whose rows are stored (NULL: written at once by ResultStore.write), and its counts
-- are the rows readers see (those of whole parts).
ALTER TABLE result_summary ADD COLUMN run TEXT;
-- migration: 11
-- Each owner's published stats, one row per session its last renewal listed
-- (SessionStore.renew_instance replaces its rows in one statement). A session's read
-- joins its own row by key: read from the owner's JSON map in `instances.progress`,
-- as until this migration, it parsed the whole map, 80 us per read of a session whose
-- owner lists 1,000 (8 us here).
CREATE TABLE instance_progress (
    token       TEXT NOT NULL,
    sid         TEXT NOT NULL,
    n_trades    INTEGER NOT NULL,
    n_orderbook INTEGER NOT NULL,
    n_errors    INTEGER NOT NULL,
    PRIMARY KEY (token, sid)
) WITHOUT ROWID;
INSERT INTO instance_progress (token, sid, n_trades, n_orderbook, n_errors)
    SELECT token, key, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
           json_extract(value, '$[2]')
    FROM instances, json_each(instances.progress);
ALTER TABLE instances DROP COLUMN progress;

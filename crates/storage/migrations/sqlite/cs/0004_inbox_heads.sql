-- CS: one row per inbox recipient, locked by each transaction that puts
-- items into that inbox, before it takes their cursors (issue 17 plan
-- A.CS.3). On PostgreSQL two such transactions could otherwise commit out
-- of cursor order: a terminal that read cursor 11 and acknowledged it
-- would never fetch 10, committed a moment later. With the row held, a
-- recipient's cursors commit in order. (SQLite has one writer: always so.)
CREATE TABLE IF NOT EXISTS cs_inbox_heads (
    recipient TEXT PRIMARY KEY,
    items     INTEGER NOT NULL
);

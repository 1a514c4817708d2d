-- What the outermost COMMIT of a durable registry's connection writes, in the same
-- transaction: one row per target model and chunk of keys, deleted once delivered.
CREATE TABLE diesel_sync_outbox (
    id BIGSERIAL PRIMARY KEY,
    -- The target model's table.
    model VARCHAR(255) NOT NULL,
    -- JSON: the keys changed, and the keys removed with the store each belonged to.
    changed TEXT NOT NULL,
    removed TEXT NOT NULL,
    -- Delivery rounds begun, the last one's error, and when the row may next be claimed
    -- (milliseconds since the Unix epoch): after a lease, or after a retry's backoff.
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    available_at BIGINT NOT NULL,
    claimed_by VARCHAR(64),
    -- Set when delivery gave up: a dead letter, kept until retried or discarded.
    dead_at BIGINT
);
CREATE INDEX diesel_sync_outbox_ready ON diesel_sync_outbox (dead_at, available_at);

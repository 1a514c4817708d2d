DROP TABLE diesel_sync_outbox;

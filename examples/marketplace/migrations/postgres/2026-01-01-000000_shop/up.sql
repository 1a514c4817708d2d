CREATE TABLE stores (id BIGINT PRIMARY KEY, name TEXT NOT NULL, sync_enabled BOOLEAN NOT NULL);
CREATE TABLE products (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL REFERENCES stores (id), name TEXT NOT NULL, price_cents BIGINT NOT NULL);
CREATE INDEX products_store_id ON products (store_id);
CREATE TABLE price_records (id BIGSERIAL PRIMARY KEY, object_id BIGINT NOT NULL REFERENCES products (id), amount_cents BIGINT NOT NULL);

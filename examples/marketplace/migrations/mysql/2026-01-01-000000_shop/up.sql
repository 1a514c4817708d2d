CREATE TABLE stores (id BIGINT PRIMARY KEY, name VARCHAR(255) NOT NULL, sync_enabled BOOLEAN NOT NULL);
CREATE TABLE products (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL, name VARCHAR(255) NOT NULL, price_cents BIGINT NOT NULL, INDEX products_store_id (store_id), FOREIGN KEY (store_id) REFERENCES stores (id));
CREATE TABLE price_records (id BIGINT AUTO_INCREMENT PRIMARY KEY, object_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL, FOREIGN KEY (object_id) REFERENCES products (id));

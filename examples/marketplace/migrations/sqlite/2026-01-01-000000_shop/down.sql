DROP TABLE price_records; DROP TABLE products; DROP TABLE stores;

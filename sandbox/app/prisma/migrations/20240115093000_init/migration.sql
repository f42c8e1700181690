-- TokoTani Online: the shop's schema, migration 20240115093000_init.
-- Applied by `npm run migrate` (scripts/migrate.js) in one transaction, and recorded in
-- _prisma_migrations as Prisma Migrate does. It needs no superuser: the database owner
-- runs it, and it creates no extensions.

CREATE TABLE "_prisma_migrations" (
    "id"                  VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"            VARCHAR(64) NOT NULL,
    "finished_at"         TIMESTAMPTZ,
    "migration_name"      VARCHAR(255) NOT NULL,
    "logs"                TEXT,
    "rolled_back_at"      TIMESTAMPTZ,
    "started_at"          TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0
);
COMMENT ON TABLE "_prisma_migrations" IS 'Applied schema migrations (Prisma Migrate layout).';

CREATE TABLE users (
    id         SERIAL PRIMARY KEY,
    email      TEXT NOT NULL,
    name       TEXT NOT NULL,
    address    TEXT,
    phone      TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);
COMMENT ON TABLE users IS 'Customer accounts.';

CREATE TABLE products (
    id          SERIAL PRIMARY KEY,
    sku         TEXT NOT NULL,
    name        TEXT NOT NULL,
    category    TEXT NOT NULL,
    description TEXT,
    price       NUMERIC(12, 2) NOT NULL CHECK (price >= 0),
    stock       INTEGER NOT NULL DEFAULT 0 CHECK (stock >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT products_sku_key UNIQUE (sku)
);
COMMENT ON TABLE products IS 'The catalogue: seeds, fertiliser, crop protection, tools. Prices in rupiah.';

CREATE TABLE orders (
    id         SERIAL PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    status     TEXT NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    total      NUMERIC(12, 2) NOT NULL DEFAULT 0 CHECK (total >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_user_id_idx ON orders (user_id);
CREATE INDEX orders_created_at_idx ON orders (created_at);
COMMENT ON TABLE orders IS 'Customer orders; total is the sum of the order''s items.';

CREATE TABLE order_items (
    id         BIGSERIAL PRIMARY KEY,
    order_id   INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id INTEGER NOT NULL REFERENCES products (id),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_price NUMERIC(12, 2) NOT NULL CHECK (unit_price >= 0)
);
CREATE INDEX order_items_order_id_idx ON order_items (order_id);
CREATE INDEX order_items_product_id_idx ON order_items (product_id);
COMMENT ON TABLE order_items IS 'Lines of an order, at the unit price charged.';

-- NextAuth's Prisma adapter layout.
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY DEFAULT md5(random()::text || clock_timestamp()::text),
    "sessionToken" TEXT NOT NULL,
    "userId"       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires        TIMESTAMPTZ NOT NULL,
    CONSTRAINT "sessions_sessionToken_key" UNIQUE ("sessionToken")
);
CREATE INDEX "sessions_userId_idx" ON sessions ("userId");
COMMENT ON TABLE sessions IS 'Login sessions (NextAuth).';

CREATE TABLE engine_heartbeat (
    worker  TEXT PRIMARY KEY,
    beat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    pid     INTEGER
);
COMMENT ON TABLE engine_heartbeat IS 'Last heartbeat of each engine hub worker; stale means the worker is down.';

CREATE TABLE secret_rotations (
    id          BIGSERIAL PRIMARY KEY,
    secret_type TEXT NOT NULL,
    rotated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX secret_rotations_rotated_at_idx ON secret_rotations (rotated_at);
COMMENT ON TABLE secret_rotations IS 'Audit trail of secret rotations (the secrets themselves are never stored).';

CREATE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION set_updated_at() IS 'Trigger function: stamps updated_at on every update.';

CREATE TRIGGER products_set_updated_at
    BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE VIEW order_totals AS
SELECT o.id                                         AS order_id,
       o.user_id,
       o.status,
       o.created_at,
       o.total,
       count(oi.id)                                 AS item_count,
       coalesce(sum(oi.quantity * oi.unit_price), 0) AS items_total
  FROM orders o
  LEFT JOIN order_items oi ON oi.order_id = o.id
 GROUP BY o.id;
COMMENT ON VIEW order_totals IS 'Each order with its item count and the sum of its items (equals total).';

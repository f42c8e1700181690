-- TokoTani Online: admin accounts and the audit log, migration 20240301000000_admin_audit.
-- Applied by `npm run migrate` (scripts/migrate.js) in one transaction, after 20240115093000_init,
-- and recorded in _prisma_migrations as Prisma Migrate does. It needs no superuser: the database
-- owner runs it. Both new columns of users have a default (password_hash is NULL), so rows
-- loaded without them (sandbox/data/generate.py's COPY) are customers who cannot log in.

ALTER TABLE users
    ADD COLUMN role TEXT NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'admin')),
    ADD COLUMN password_hash TEXT;
COMMENT ON COLUMN users.role IS 'customer or admin: an admin''s session may use the admin API.';
COMMENT ON COLUMN users.password_hash IS 'scrypt$<salt base64url>$<hash base64url>; NULL: the user cannot log in.';

CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    detail      JSONB,
    remote_addr TEXT
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
COMMENT ON TABLE audit_log IS 'Admin actions and logins, written by the app.';

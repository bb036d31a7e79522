-- scoped, named, revocable keys: what a key may do, who holds it, and whether
-- it was revoked (keys from before scopes are admin keys)
ALTER TABLE api_keys ADD COLUMN key_id text;
ALTER TABLE api_keys ADD COLUMN scope text NOT NULL DEFAULT 'admin'
    CHECK (scope IN ('ingest', 'read', 'approve', 'admin'));
ALTER TABLE api_keys ADD COLUMN holder text;
ALTER TABLE api_keys ADD COLUMN revoked_at timestamptz;
ALTER TABLE api_keys ADD COLUMN revoked_by text;
CREATE INDEX api_keys_key_id ON api_keys (key_id);

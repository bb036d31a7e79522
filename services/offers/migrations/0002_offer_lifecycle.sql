-- Offers get a lifecycle (held_out, expiry in stream time, who accepted or
-- declined), the decision as published, and the state the engine keeps.
ALTER TABLE offers DROP CONSTRAINT offers_status_check;
ALTER TABLE offers ADD CONSTRAINT offers_status_check CHECK (
    status IN ('issued','held_out','accepted','declined','expired','redeemed'));
ALTER TABLE offers
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN holdout    boolean NOT NULL DEFAULT false,
    ADD COLUMN decision   jsonb,
    ADD COLUMN actor      text,
    ADD COLUMN comment    text,
    ADD COLUMN updated_at timestamptz;
UPDATE offers SET expires_at = issued_at + interval '30 days' WHERE expires_at IS NULL;
ALTER TABLE offers ALTER COLUMN expires_at SET NOT NULL;
CREATE INDEX offers_by_account ON offers (tenant, account, issued_at);
CREATE INDEX offers_open_by_expiry ON offers (tenant, expires_at) WHERE status = 'issued';

-- per account: the facts of its last segment transition, event-rule counters
CREATE TABLE offer_accounts (
    tenant  text NOT NULL,
    account text NOT NULL,
    env     jsonb,
    counts  jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant, account)
);

-- every rule that matched a moment but did not win it, and why
CREATE TABLE offer_suppressions (
    tenant  text NOT NULL,
    account text NOT NULL,
    moment  text NOT NULL,
    rule    text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('suppressed', 'lost')),
    reason  text NOT NULL,
    at      timestamptz NOT NULL,
    PRIMARY KEY (tenant, account, moment, rule)
);

-- stream time per tenant: the largest event time the offers service has seen
CREATE TABLE offer_clocks (
    tenant    text PRIMARY KEY,
    watermark timestamptz NOT NULL
);

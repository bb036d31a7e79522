-- Issue 3: account state as a document, tenant stream clocks, segment membership.
DROP TABLE accounts;

CREATE TABLE accounts (
    tenant        text NOT NULL,
    account       text NOT NULL,
    state         jsonb NOT NULL,
    segments      text[] NOT NULL DEFAULT '{}',
    evaluated_day integer,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, account)
);
CREATE INDEX accounts_segments ON accounts USING gin (segments);

CREATE TABLE tenant_clocks (
    tenant      text PRIMARY KEY,
    watermark   timestamptz,
    stream_day  integer,
    breakpoints jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

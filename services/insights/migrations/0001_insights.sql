-- The insights read model: facts taken from the topics, appended idempotently.
-- Reports are computed from them at read time, so that a replay in any
-- interleaving of partitions gives the same numbers.

-- the tenant's stream time: the latest event time read (ticks included)
CREATE TABLE clocks (
    tenant        text PRIMARY KEY,
    stream_time   timestamptz NOT NULL,
    ready_checked timestamptz           -- the last stream day readiness was evaluated for
);

-- every billing.subscription_updated: an account's plan, seats, MRR and status over time
CREATE TABLE subscriptions (
    tenant    text NOT NULL,
    event_id  text NOT NULL,
    account   text NOT NULL,
    at        timestamptz NOT NULL,
    plan      text NOT NULL,
    interval  text NOT NULL,
    seats     integer NOT NULL,
    mrr       bigint NOT NULL,
    currency  char(3) NOT NULL,
    status    text NOT NULL,
    PRIMARY KEY (tenant, event_id)
);
CREATE INDEX subscriptions_account ON subscriptions (tenant, account, at);

-- every billing.invoice_paid
CREATE TABLE invoices (
    tenant    text NOT NULL,
    event_id  text NOT NULL,
    account   text NOT NULL,
    at        timestamptz NOT NULL,
    amount    bigint NOT NULL,
    currency  char(3) NOT NULL,
    PRIMARY KEY (tenant, event_id)
);
CREATE INDEX invoices_at ON invoices (tenant, at);

-- every segment.entered / segment.exited
CREATE TABLE segment_changes (
    tenant    text NOT NULL,
    event_id  text NOT NULL,
    account   text NOT NULL,
    segment   text NOT NULL,
    entered   boolean NOT NULL,
    at        timestamptz NOT NULL,
    PRIMARY KEY (tenant, event_id)
);
CREATE INDEX segment_changes_segment ON segment_changes (tenant, segment, at);
CREATE INDEX segment_changes_account ON segment_changes (tenant, account, at);

-- every offer.issued (treated) and offer.held_out (held out): an exposure
CREATE TABLE exposures (
    tenant       text NOT NULL,
    offer_id     text NOT NULL,
    account      text NOT NULL,
    rule         text NOT NULL,
    holdout      boolean NOT NULL,
    at           timestamptz NOT NULL,
    segments     text[] NOT NULL,
    reward_kind  text NOT NULL,
    cost         bigint NOT NULL,
    currency     char(3) NOT NULL,
    PRIMARY KEY (tenant, offer_id)
);
CREATE INDEX exposures_rule ON exposures (tenant, rule, at);

-- every credit decision of the ledger, by the offer it answers
CREATE TABLE credit_decisions (
    tenant    text NOT NULL,
    event_id  text NOT NULL,
    offer_id  text NOT NULL,
    outcome   text NOT NULL CHECK (outcome IN ('granted','rejected','pending','expired')),
    at        timestamptz NOT NULL,
    amount    bigint NOT NULL,
    cost      bigint NOT NULL,          -- discount-equivalent cost (0 for an expiry)
    currency  char(3) NOT NULL,
    PRIMARY KEY (tenant, event_id)
);
CREATE INDEX credit_decisions_offer ON credit_decisions (tenant, offer_id);

-- an account's first use of a feature (product.feature_used): its adoption
CREATE TABLE adoptions (
    tenant      text NOT NULL,
    account     text NOT NULL,
    feature     text NOT NULL,
    adopted_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant, account, feature)
);
CREATE INDEX adoptions_feature ON adoptions (tenant, feature, adopted_at);

-- bundle.ready signals published, once per account and sequence
CREATE TABLE signals_sent (
    tenant    text NOT NULL,
    account   text NOT NULL,
    sequence  text NOT NULL,
    at        timestamptz NOT NULL,
    PRIMARY KEY (tenant, account, sequence)
);

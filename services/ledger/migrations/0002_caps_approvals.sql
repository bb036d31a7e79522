-- Issue 5: decisions with caps and approvals, leased budgets, redemption and expiry.

-- What is left of each credit. Balances themselves live in entries; these columns
-- say which credit a redemption or an expiry drew on.
ALTER TABLE credits
    ADD COLUMN partition integer NOT NULL DEFAULT 0,
    ADD COLUMN kind      text,
    ADD COLUMN tier      text,
    ADD COLUMN redeemed  bigint NOT NULL DEFAULT 0,
    ADD COLUMN expired   bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT credits_never_negative
        CHECK (redeemed >= 0 AND expired >= 0 AND redeemed + expired <= amount);
CREATE INDEX credits_open ON credits (tenant, partition, expires_at)
    WHERE redeemed + expired < amount;

-- One decision per issued offer: granted, rejected (the cap, its headroom) or
-- pending an approver. The published answer is kept to answer repeats.
CREATE TABLE decisions (
    tenant         text    NOT NULL,
    offer_id       text    NOT NULL,
    account        text    NOT NULL,
    partition      integer NOT NULL,
    rule           text    NOT NULL,
    kind           text    NOT NULL,
    status         text    NOT NULL CHECK (status IN ('granted', 'rejected', 'pending')),
    value          bigint,
    value_currency char(3),
    cost           bigint  NOT NULL CHECK (cost >= 0),
    currency       char(3) NOT NULL,
    cap            text,
    headroom       bigint,
    reason         text    NOT NULL,
    tier           text,
    segments       text[]  NOT NULL DEFAULT '{}',
    arr            bigint,
    offered_at     timestamptz NOT NULL,
    decided_at     timestamptz NOT NULL,
    approval_expires_at timestamptz,
    actor          text,
    comment        text,
    offer          jsonb   NOT NULL,
    answer         jsonb,
    PRIMARY KEY (tenant, offer_id)
);
CREATE INDEX decisions_by_account ON decisions (tenant, account, decided_at);
CREATE INDEX decisions_pending ON decisions (tenant, partition, approval_expires_at)
    WHERE status = 'pending';

CREATE TABLE approval_audit (
    id       bigserial PRIMARY KEY,
    tenant   text NOT NULL,
    offer_id text NOT NULL,
    action   text NOT NULL,          -- requested | approve | reject | expired
    actor    text,
    comment  text,
    outcome  text NOT NULL,          -- pending | granted | rejected
    detail   text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX approval_audit_by_offer ON approval_audit (tenant, offer_id, id);

-- Shared budgets: the central row says how much of a cap was leased out; each
-- partition's lease says how much of its slice it has used. Only the lease row is
-- touched per grant; the central row only when a slice runs out.
CREATE TABLE budgets (
    tenant    text    NOT NULL,
    name      text    NOT NULL,
    period    text    NOT NULL,
    currency  char(3) NOT NULL,
    allocated bigint  NOT NULL DEFAULT 0 CHECK (allocated >= 0),
    PRIMARY KEY (tenant, name, period, currency)
);
CREATE TABLE budget_leases (
    tenant    text    NOT NULL,
    name      text    NOT NULL,
    period    text    NOT NULL,
    currency  char(3) NOT NULL,
    partition integer NOT NULL,
    leased    bigint  NOT NULL DEFAULT 0,
    used      bigint  NOT NULL DEFAULT 0,
    CHECK (used >= 0 AND used <= leased),
    PRIMARY KEY (tenant, name, period, currency, partition)
);

CREATE TABLE redemptions (
    tenant     text    NOT NULL,
    event_id   text    NOT NULL,
    account    text    NOT NULL,
    credit_id  text    NOT NULL,
    invoice_id text    NOT NULL,
    amount     bigint  NOT NULL CHECK (amount > 0),
    currency   char(3) NOT NULL,
    at         timestamptz NOT NULL,
    PRIMARY KEY (tenant, event_id)
);

-- Which credits each redemption or expiry drew on (the statement's lines).
CREATE TABLE credit_moves (
    txn_id    text   NOT NULL REFERENCES transactions (txn_id),
    credit_id text   NOT NULL REFERENCES credits (credit_id),
    kind      text   NOT NULL CHECK (kind IN ('redeemed', 'expired')),
    amount    bigint NOT NULL CHECK (amount > 0),
    PRIMARY KEY (txn_id, credit_id)
);

-- Stream time per tenant and partition: expiries happen when it passes them.
CREATE TABLE ledger_clocks (
    tenant    text    NOT NULL,
    partition integer NOT NULL,
    at        timestamptz NOT NULL,
    PRIMARY KEY (tenant, partition)
);

-- The newest ARR and segments of every account (from segments.changes), for the
-- cost-share-of-ARR report; decisions use the offer's own snapshot.
CREATE TABLE account_profiles (
    tenant   text NOT NULL,
    account  text NOT NULL,
    arr      bigint,
    currency char(3),
    segments text[] NOT NULL DEFAULT '{}',
    as_of    timestamptz NOT NULL,
    PRIMARY KEY (tenant, account)
);

CREATE TABLE accounts (
    tenant          text    NOT NULL,
    account         text    NOT NULL,
    seats_purchased integer NOT NULL DEFAULT 0,
    seats_used      integer NOT NULL DEFAULT 0,
    mrr_amount      bigint,
    mrr_currency    char(3),
    plan            text,
    billing_interval text,
    renewal_date    date,
    segments        text[]  NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, account)
);

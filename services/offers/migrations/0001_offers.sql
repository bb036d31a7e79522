CREATE TABLE offers (
    offer_id      text PRIMARY KEY,
    tenant        text NOT NULL,
    account       text NOT NULL,
    rule          text NOT NULL,
    status        text NOT NULL CHECK (status IN ('issued','accepted','declined','expired','redeemed')),
    reward_kind   text NOT NULL,
    value_amount  bigint,
    cost_amount   bigint NOT NULL,
    currency      char(3) NOT NULL,
    user_id       text,
    reason        text NOT NULL,
    cause_event   text NOT NULL,
    issued_at     timestamptz NOT NULL
);
-- never a second open offer of the same rule
CREATE UNIQUE INDEX offers_one_open_per_rule ON offers (tenant, account, rule)
    WHERE status = 'issued';

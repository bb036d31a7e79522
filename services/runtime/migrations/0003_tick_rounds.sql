-- Clock-tick rounds being read (services/runtime/ticks.py): how many of a round's
-- ticks this service has applied; a round read in full moves the tenant's time.
CREATE TABLE tick_rounds (
    tenant    text        NOT NULL,
    round_at  timestamptz NOT NULL,
    seen      integer     NOT NULL,
    size      integer     NOT NULL,
    PRIMARY KEY (tenant, round_at)
);

-- A test service's effect: one row per applied event, with a unique key so that
-- doubling an effect would be visible as a count, not hidden by a constraint.
CREATE TABLE effects (
    n        bigserial PRIMARY KEY,
    tenant   text NOT NULL,
    event_id text NOT NULL,
    account  text NOT NULL
);

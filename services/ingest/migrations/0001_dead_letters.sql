-- Dead letters replayed or discarded by an operator (services/runtime/dlq.py): the
-- entries themselves are the records of the <topic>.dlq topics; a row here is the
-- one decision taken on one (keyed by where it sits; record_ms tells a record from
-- a later one at the same offset after the embedded broker lost its topics).
CREATE TABLE dead_letter_status (
    dlq_topic     text        NOT NULL,
    partition     integer     NOT NULL,
    record_offset bigint      NOT NULL,
    record_ms     bigint      NOT NULL,
    tenant        text,
    status        text        NOT NULL CHECK (status IN ('replayed', 'discarded')),
    replayed_to   jsonb,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, partition, record_offset)
);

-- Who did what to which dead letter, when, and why.
CREATE TABLE dead_letter_audit (
    seq           bigserial   PRIMARY KEY,
    dlq_topic     text        NOT NULL,
    partition     integer     NOT NULL,
    record_offset bigint      NOT NULL,
    record_ms     bigint      NOT NULL,
    tenant        text,
    action        text        NOT NULL CHECK (action IN ('replayed', 'discarded')),
    actor         text        NOT NULL,
    comment       text,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_audit_record ON dead_letter_audit (dlq_topic, partition, record_offset);

-- Event-time mode over several partitions (services/segmenter/adapters/held.py):
-- the newest clock.watermark seen per (tenant, input partition), and the events
-- of marked partitions held until every partition's watermark has passed them.
CREATE TABLE partition_marks (
    tenant    text        NOT NULL,
    topic     text        NOT NULL,
    partition integer     NOT NULL,
    watermark timestamptz NOT NULL,
    expected  integer     NOT NULL,
    PRIMARY KEY (tenant, topic, partition)
);

CREATE TABLE held_events (
    tenant    text        NOT NULL,
    at        timestamptz NOT NULL,
    account   text        NOT NULL,
    topic     text        NOT NULL,
    partition integer     NOT NULL,
    "offset"  bigint      NOT NULL,
    stamp     bigint,
    key       bytea,
    value     bytea       NOT NULL,
    headers   text        NOT NULL,
    PRIMARY KEY (tenant, at, account, topic, partition, "offset")
);

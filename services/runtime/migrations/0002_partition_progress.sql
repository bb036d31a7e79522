-- When each consumed partition was last seen read to its end, by whichever
-- instance owns it: services that act on time (the segmenter's day rollovers)
-- only move time as far as every partition has caught up.
CREATE TABLE partition_progress (
    topic         text    NOT NULL,
    partition     integer NOT NULL,
    caught_up_at  timestamptz,
    PRIMARY KEY (topic, partition)
);

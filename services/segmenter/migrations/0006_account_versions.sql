-- Each write of an account records the writing transaction's id as its version:
-- a segmenter keeps the states it wrote in memory and reloads one only when the
-- stored version is not its own (no two writes ever share a transaction id).
ALTER TABLE accounts ADD COLUMN version bigint NOT NULL DEFAULT 0;

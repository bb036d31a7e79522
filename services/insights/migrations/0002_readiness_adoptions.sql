-- readiness is checked again when the tenant's adoptions grew by a tenth since
-- the last check, not only at a new stream day (a backlog read at its own pace
-- moves the clock to its last day long before its adoptions are all in)
ALTER TABLE clocks ADD COLUMN ready_adoptions bigint NOT NULL DEFAULT 0;

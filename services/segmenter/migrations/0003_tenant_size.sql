-- RFM breakpoints are also redrawn as a tenant grows (see docs/segments.md).
ALTER TABLE tenant_clocks
    ADD COLUMN accounts integer NOT NULL DEFAULT 0,
    ADD COLUMN scored_accounts integer NOT NULL DEFAULT 0;

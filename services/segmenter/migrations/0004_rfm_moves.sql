-- Breakpoints are redrawn when a tenth of the accounts changed their RFM values.
ALTER TABLE tenant_clocks ADD COLUMN moved_accounts integer NOT NULL DEFAULT 0;

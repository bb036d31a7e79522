-- In-day breakpoint redraws on moved values are limited to one per rfm.redraw_every.
ALTER TABLE tenant_clocks ADD COLUMN rescored_at timestamptz;

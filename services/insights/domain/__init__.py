"""Pure insights logic: facts in, reports out; no I/O, no clock."""

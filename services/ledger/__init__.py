"""ledger: double-entry credit ledger, caps, approvals, expiry, liability."""

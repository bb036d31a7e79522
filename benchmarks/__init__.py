"""The benchmarks behind `loyalty bench`: they live in the checkout, not in the
installed engine, and need the `embedded` extra unless LOYALTY_KAFKA_BOOTSTRAP and
LOYALTY_DATABASE_URL point at a stack."""

"""Storage of the insights facts: Postgres, and memory for simulations and tests."""

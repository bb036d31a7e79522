"""The ledger's pure logic: bookkeeping, the caps section of the program, decisions."""

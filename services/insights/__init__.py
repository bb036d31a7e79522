"""insights: the read model that measures the program - lift against the holdouts,
NRR, the up-sell rate, segment growth, bundles. It decides nothing."""

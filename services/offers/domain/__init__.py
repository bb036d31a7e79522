"""The offers service's pure core: the program's rules, and the decision engine."""

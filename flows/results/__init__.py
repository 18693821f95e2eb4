"""Results: the target ranking, the results DB and the read-only queries over it."""

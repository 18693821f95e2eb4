"""Federated fusion training with Flower: each site keeps its patients and trains locally; only model
weights (and per-feature sums for a shared standardisation) travel. `simulate` runs N sites as separate
processes against a Flower server on loopback and compares with the centralised model and each site alone."""

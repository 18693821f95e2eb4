"""Multi-process training launched by torchrun (DDP)."""

"""Training: the one training loop (``trainer``), a model and its data (``learner``),
devices, metrics, local and central runs (``run``), prediction and profiles."""

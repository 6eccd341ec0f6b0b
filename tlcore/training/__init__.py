"""Training runs: the training loop, callbacks, cached features, recipes, sweeps, estimates."""

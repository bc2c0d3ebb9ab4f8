"""Training: the loop, the objectives (losses chosen by name), token-budget batching."""

"""rnnguard.tune."""

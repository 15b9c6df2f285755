"""rnnguard.bench."""

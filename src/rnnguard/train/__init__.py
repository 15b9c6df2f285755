"""rnnguard.train."""

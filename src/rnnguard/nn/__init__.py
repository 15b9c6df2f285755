"""rnnguard.nn."""

"""rnnguard.diagnose."""

"""rnnguard.tasks."""

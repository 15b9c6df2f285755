"""Small shared utilities (atomic file I/O, configuration checks, command-line helpers)."""

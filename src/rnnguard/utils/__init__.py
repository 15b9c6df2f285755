"""Small shared utilities (atomic file I/O, validation helpers)."""

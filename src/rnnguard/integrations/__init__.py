"""Adapters that bring rnnguard into other training frameworks (each an optional extra).

- :mod:`rnnguard.integrations.lightning`: ``GuardCallback`` and ``HorizonCallback`` for a
  ``lightning`` Trainer (``pip install rnnguard[lightning]``).

Nothing here is imported by ``import rnnguard``.
"""

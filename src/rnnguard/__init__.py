"""rnnguard: recurrent networks that train reliably on long sequences."""

__version__ = "0.1.0"

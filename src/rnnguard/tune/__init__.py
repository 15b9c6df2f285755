"""Optuna search over stability recipes: resumable, exactly N trials, many workers.

Needs the ``tune`` extra (``pip install 'rnnguard[tune]'``); Optuna is imported only when a search
runs, so importing this package is cheap.
"""

from rnnguard.tune.objective import ToyObjective, TrainObjective
from rnnguard.tune.report import SearchReport, top_trials_table, write_report
from rnnguard.tune.search import SearchResult, search
from rnnguard.tune.space import SearchSpace, get_space, list_spaces, register_space
from rnnguard.tune.storage import StorageSpec, open_storage, parse_storage

__all__ = [
    "SearchReport",
    "SearchResult",
    "SearchSpace",
    "StorageSpec",
    "ToyObjective",
    "TrainObjective",
    "get_space",
    "list_spaces",
    "open_storage",
    "parse_storage",
    "register_space",
    "search",
    "top_trials_table",
    "write_report",
]

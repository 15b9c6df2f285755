"""rnnguard: recurrent networks that train reliably on long sequences.

Layers drop into torch.nn code (``rnnguard.LSTM(..., layer_norm=True, zoneout=0.1)``),
``GradientGuard`` and ``fit`` make training survive, ``rnnguard.diagnose.doctor`` measures why
gradients vanish or explode and prescribes a cure, ``rnnguard.bench`` and ``rnnguard.tune`` measure
and search recipes.
"""

__version__ = "0.1.0"

from rnnguard.nn import (
    GRU,
    LRU,
    LSTM,
    RNN,
    CausalTransformer,
    DropConnect,
    GRUCell,
    HiddenState,
    IndRNN,
    IndRNNCell,
    LSTMCell,
    LSTMState,
    RNNCell,
    Zoneout,
    create_layer,
    init,
    layer_step_function,
    list_layers,
    register_layer,
)
from rnnguard.tasks.registry import create_task, list_tasks, register_task
from rnnguard.train.config import GuardConfig, OptimConfig, ScheduleConfig, TrainConfig
from rnnguard.train.guard import GradientGuard
from rnnguard.train.recipes import Recipe, get_recipe, list_recipes, register_recipe
from rnnguard.train.state import FitResult
from rnnguard.train.trainer import fit

__all__ = [
    "GRU",
    "LRU",
    "LSTM",
    "RNN",
    "CausalTransformer",
    "DropConnect",
    "FitResult",
    "GRUCell",
    "GradientGuard",
    "GuardConfig",
    "HiddenState",
    "IndRNN",
    "IndRNNCell",
    "LSTMCell",
    "LSTMState",
    "OptimConfig",
    "RNNCell",
    "Recipe",
    "ScheduleConfig",
    "TrainConfig",
    "Zoneout",
    "__version__",
    "create_layer",
    "create_task",
    "fit",
    "get_recipe",
    "init",
    "layer_step_function",
    "list_layers",
    "list_recipes",
    "list_tasks",
    "register_layer",
    "register_recipe",
    "register_task",
]

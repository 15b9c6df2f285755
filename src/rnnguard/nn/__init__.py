"""rnnguard.nn: recurrent layers, cells, regulariser modules, initialisers and the layer registry."""

from rnnguard.nn import init
from rnnguard.nn.attention import CausalTransformer
from rnnguard.nn.cells import GRUCell, IndRNNCell, LSTMCell, RNNCell
from rnnguard.nn.functional import HiddenState, LSTMState
from rnnguard.nn.kinds import KINDS, KindSpec, kind_spec
from rnnguard.nn.layers import GRU, LSTM, RNN, IndRNN
from rnnguard.nn.lru import LRU
from rnnguard.nn.options import RecurrentOptions
from rnnguard.nn.registry import create_layer, list_layers, register_layer
from rnnguard.nn.regularisers import DropConnect, Zoneout
from rnnguard.nn.step_function import StepFunction, layer_step_function

__all__ = [
    "GRU",
    "KINDS",
    "LRU",
    "LSTM",
    "RNN",
    "CausalTransformer",
    "DropConnect",
    "GRUCell",
    "HiddenState",
    "IndRNN",
    "IndRNNCell",
    "KindSpec",
    "LSTMCell",
    "LSTMState",
    "RNNCell",
    "RecurrentOptions",
    "StepFunction",
    "Zoneout",
    "create_layer",
    "init",
    "kind_spec",
    "layer_step_function",
    "list_layers",
    "register_layer",
]

"""rnnguard.nn: recurrent layers, cells, regulariser modules, initialisers and the layer registry."""

from rnnguard.nn import init
from rnnguard.nn.attention import CausalTransformer
from rnnguard.nn.cells import GRUCell, IndRNNCell, LSTMCell, RNNCell
from rnnguard.nn.functional import HiddenState, LSTMState, layer_step_function
from rnnguard.nn.layers import GRU, LSTM, RNN, IndRNN
from rnnguard.nn.lru import LRU
from rnnguard.nn.registry import create_layer, list_layers, register_layer
from rnnguard.nn.regularisers import DropConnect, Zoneout

__all__ = [
    "GRU",
    "LRU",
    "LSTM",
    "RNN",
    "CausalTransformer",
    "DropConnect",
    "GRUCell",
    "HiddenState",
    "IndRNN",
    "IndRNNCell",
    "LSTMCell",
    "LSTMState",
    "RNNCell",
    "Zoneout",
    "create_layer",
    "init",
    "layer_step_function",
    "list_layers",
    "register_layer",
]

"""torch.nn.modules.rnn: the recurrent layers and cells (defined in easyfit.nn.recurrent)."""
from ..recurrent import RNNBase, RNN, LSTM, GRU, RNNCellBase, RNNCell, LSTMCell, GRUCell

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]

"""Vanilla RNN and LSTM cells and multi-layer sequence modules, from the course notes' equations.
Parameter names, shapes, gate order and initialization follow torch.nn.RNN / torch.nn.LSTM, so
their state dicts load into these modules and give the same outputs.

RNN:   h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
LSTM:  (i, f, g, o) = (sigma, sigma, tanh, sigma)(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
       c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)
(The notes stack the gates as i, f, o, g; PyTorch's order i, f, g, o is used so weights copy.)
Layer l > 0 takes layer l - 1's hidden states as its input sequence.
"""

from __future__ import annotations

import math

import torch
from torch import nn

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def _uniform_init(module: nn.Module, hidden_size: int) -> None:
    bound = 1 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


class RNNCell(nn.Module):
    """x: (B, D), h: (B, H) -> h': (B, H)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(hidden_size))
        _uniform_init(self, hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh)


class LSTMCell(nn.Module):
    """x: (B, D), (h, c): (B, H) each -> (h', c')."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        _uniform_init(self, hidden_size)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        return lstm_update(gates, c)


def lstm_update(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gates (B, 4H) = pre-activations of (i, f, g, o); returns (h_t, c_t)."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class _Recurrent(nn.Module):
    gates: int

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hidden_size, self.num_layers, self.batch_first, self.dropout = (
            hidden_size,
            num_layers,
            batch_first,
            dropout,
        )
        for layer in range(num_layers):
            d_in = input_size if layer == 0 else hidden_size
            self.register_parameter(
                f"weight_ih_l{layer}", nn.Parameter(torch.empty(self.gates * hidden_size, d_in))
            )
            self.register_parameter(
                f"weight_hh_l{layer}", nn.Parameter(torch.empty(self.gates * hidden_size, hidden_size))
            )
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(self.gates * hidden_size)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(self.gates * hidden_size)))
        _uniform_init(self, hidden_size)

    def _weights(self, layer: int) -> tuple[torch.Tensor, ...]:
        return tuple(
            getattr(self, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )

    def _zeros(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)


class RNN(_Recurrent):
    """x: (B, T, D) (batch_first) or (T, B, D); h0: (L, B, H) or None (zeros).
    Returns the last layer's states (B, T, H) and h_T of every layer (L, B, H)."""

    gates = 1

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        seq = x if self.batch_first else x.transpose(0, 1)  # (B, T, D)
        h0 = self._zeros(seq) if h0 is None else h0
        finals = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._weights(layer)
            inputs = seq @ w_ih.T + b_ih  # all time steps' input projections at once: (B, T, H)
            h, outputs = h0[layer], []
            for t in range(seq.shape[1]):
                h = torch.tanh(inputs[:, t] + h @ w_hh.T + b_hh)
                outputs.append(h)
            seq = torch.stack(outputs, dim=1)
            finals.append(h)
            if self.dropout and self.training and layer < self.num_layers - 1:
                seq = nn.functional.dropout(seq, self.dropout)
        out = seq if self.batch_first else seq.transpose(0, 1)
        return out, torch.stack(finals)


class LSTM(_Recurrent):
    """x: (B, T, D) (batch_first) or (T, B, D); state (h0, c0): (L, B, H) each, or None (zeros).
    Returns the last layer's h_t (B, T, H) and (h_T, c_T) of every layer."""

    gates = 4

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        seq = x if self.batch_first else x.transpose(0, 1)
        h0, c0 = (self._zeros(seq), self._zeros(seq)) if state is None else state
        final_h, final_c = [], []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._weights(layer)
            inputs = seq @ w_ih.T + b_ih  # (B, T, 4H)
            h, c, outputs = h0[layer], c0[layer], []
            for t in range(seq.shape[1]):
                h, c = lstm_update(inputs[:, t] + h @ w_hh.T + b_hh, c)
                outputs.append(h)
            seq = torch.stack(outputs, dim=1)
            final_h.append(h)
            final_c.append(c)
            if self.dropout and self.training and layer < self.num_layers - 1:
                seq = nn.functional.dropout(seq, self.dropout)
        out = seq if self.batch_first else seq.transpose(0, 1)
        return out, (torch.stack(final_h), torch.stack(final_c))


def detach_state(state: State) -> State:
    """Cut the graph at a truncated-BPTT boundary: keep the values, drop the history."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


class IDU(nn.Module):
    """Information Discrimination Unit (Eun et al. 2020): a GRU over a window of frame embeddings
    whose gates also see e_0, the embedding of the window's last (the current) frame, to decide how
    much of each past frame is relevant to the ongoing action. With h_0 = 0, for t = 1..W:
        r_t = sigma(W_hr h_{t-1} + W_0r e_0 + b_r)                (reset: past state vs now)
        z_t = sigma(W_tz e_t + W_0z e_0 + b_z)                    (update: frame t vs now)
        c_t = tanh(W_th e_t + W_hh (r_t * h_{t-1}) + b_h)
        h_t = (1 - z_t) * c_t + z_t * h_{t-1}
    (z weighs the old state, as in Cho et al.'s GRU). A step whose frame is not valid (before the
    start of a stream) keeps h_{t-1}. e: (B, W, E), valid: (B, W) bool -> h_W: (B, H)."""

    def __init__(self, embed_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.frame = nn.Linear(embed_size, 2 * hidden_size)  # W_tz, W_th (with b_z, b_h)
        self.current = nn.Linear(embed_size, 2 * hidden_size, bias=False)  # W_0r, W_0z
        self.reset_h = nn.Linear(hidden_size, hidden_size)  # W_hr (with b_r)
        self.candidate_h = nn.Linear(hidden_size, hidden_size, bias=False)  # W_hh

    def forward(self, e: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        B, W, _ = e.shape
        update_t, candidate_t = self.frame(e).chunk(2, dim=-1)  # (B, W, H) each
        reset_0, update_0 = self.current(e[:, -1]).chunk(2, dim=-1)  # (B, H) each
        z = torch.sigmoid(update_t + update_0[:, None])
        h = e.new_zeros(B, self.hidden_size)
        for t in range(W):
            r = torch.sigmoid(self.reset_h(h) + reset_0)
            c = torch.tanh(candidate_t[:, t] + self.candidate_h(r * h))
            new = (1 - z[:, t]) * c + z[:, t] * h
            h = new if valid is None else torch.where(valid[:, t, None], new, h)
        return h

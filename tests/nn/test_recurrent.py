import pytest
import torch
from torch import nn

from deepzoo.gradcheck import check_gradients
from deepzoo.nn.recurrent import LSTM, RNN, LSTMCell, RNNCell, detach_state


def _compare(ours, reference, x, state):
    ours.load_state_dict(reference.state_dict())
    out_ours, state_ours = ours(x, state)
    out_ref, state_ref = reference(x, state)
    torch.testing.assert_close(out_ours, out_ref, rtol=1e-5, atol=1e-6)
    flat_ours = state_ours if isinstance(state_ours, tuple) else (state_ours,)
    flat_ref = state_ref if isinstance(state_ref, tuple) else (state_ref,)
    for a, b in zip(flat_ours, flat_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    upstream = torch.randn_like(out_ref)
    (out_ours * upstream).sum().backward()
    (out_ref * upstream).sum().backward()
    for (name, p_ours), p_ref in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p_ours.grad, p_ref.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multilayer_rnn_equals_torch_with_copied_weights(batch_first):
    torch.manual_seed(0)
    x = torch.randn(3, 7, 5) if batch_first else torch.randn(7, 3, 5)
    h0 = torch.randn(2, 3, 6)
    _compare(RNN(5, 6, 2, batch_first), nn.RNN(5, 6, 2, batch_first=batch_first), x, h0)


@pytest.mark.parametrize("layers", [1, 3])
def test_multilayer_lstm_equals_torch_with_copied_weights(layers):
    torch.manual_seed(0)
    x = torch.randn(4, 9, 5)
    state = (torch.randn(layers, 4, 6), torch.randn(layers, 4, 6))
    _compare(LSTM(5, 6, layers), nn.LSTM(5, 6, layers, batch_first=True), x, state)
    _compare(LSTM(5, 6, layers), nn.LSTM(5, 6, layers, batch_first=True), x, None)


def test_cells_equal_torch_cells():
    torch.manual_seed(0)
    x, h, c = torch.randn(4, 5), torch.randn(4, 6), torch.randn(4, 6)
    rnn_ours, rnn_ref = RNNCell(5, 6), nn.RNNCell(5, 6)
    rnn_ours.load_state_dict(rnn_ref.state_dict())
    torch.testing.assert_close(rnn_ours(x, h), rnn_ref(x, h))
    lstm_ours, lstm_ref = LSTMCell(5, 6), nn.LSTMCell(5, 6)
    lstm_ours.load_state_dict(lstm_ref.state_dict())
    for a, b in zip(lstm_ours(x, (h, c)), lstm_ref(x, (h, c))):
        torch.testing.assert_close(a, b)


def test_lstm_cell_gradients_pass_gradcheck():
    torch.manual_seed(0)
    cell = LSTMCell(3, 4).double()
    x, h, c = (torch.randn(2, n, dtype=torch.float64, requires_grad=True) for n in (3, 4, 4))
    check_gradients(lambda x, h, c: torch.cat(cell(x, (h, c)), dim=1), [x, h, c])


def test_truncation_stops_gradients_at_the_boundary():
    torch.manual_seed(0)
    lstm = LSTM(2, 3)
    x = torch.randn(1, 10, 2, requires_grad=True)
    _, state = lstm(x[:, :5])
    out, _ = lstm(x[:, 5:], detach_state(state))
    out.sum().backward()
    assert x.grad[:, :5].abs().sum() == 0 and x.grad[:, 5:].abs().sum() > 0
    x.grad = None
    _, state = lstm(x[:, :5])
    out, _ = lstm(x[:, 5:], state)  # full BPTT: the first half gets gradient
    out.sum().backward()
    assert x.grad[:, :5].abs().sum() > 0


@pytest.mark.parametrize("kind", [RNN, LSTM, RNNCell, LSTMCell])
def test_every_weight_starts_uniform_in_plus_minus_one_over_sqrt_hidden(kind):
    """torch.nn's initialization, U(-1/sqrt(H), 1/sqrt(H)): the extremes reach the bound, the
    variance is bound^2 / 3."""
    module, bound = kind(10, 400), 1 / 400**0.5
    values = torch.cat([p.detach().flatten() for p in module.parameters()])
    assert values.abs().max() <= bound and values.abs().max() > 0.99 * bound
    assert values.var().item() == pytest.approx(bound**2 / 3, rel=0.05)


@pytest.mark.parametrize("kind", [RNN, LSTM])
def test_dropout_acts_between_layers_in_training_only(kind):
    """torch.nn's semantics: dropout on each layer's outputs except the last layer's."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4)
    deep = kind(4, 8, num_layers=2, dropout=0.5)
    shallow = kind(4, 8, num_layers=1, dropout=0.5)
    for module in (deep, shallow):
        plain = kind(4, 8, num_layers=module.num_layers)
        plain.load_state_dict(module.state_dict())
        torch.testing.assert_close(module.eval()(x)[0], plain(x)[0])
    torch.testing.assert_close(shallow.train()(x)[0], shallow.eval()(x)[0])  # nothing after the last layer
    assert not torch.allclose(deep.train()(x)[0], deep.eval()(x)[0])

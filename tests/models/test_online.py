"""Online action detectors (models/online.py): strictly causal, streamable in pieces, the IDU and
the losses by their equations, and a short training run that learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deepzoo.data.streams import StreamConfig, chunk_streams, synthetic_streams
from deepzoo.models.online import OnlineConfig, frame_cross_entropy, online_detector
from deepzoo.nn.recurrent import IDU

ARCHS = ("lstm", "trn", "idn")
SMALL = dict(input_dim=6, num_classes=4, embed=8, hidden=12, decoder_steps=3, window=5)


def small_model(arch: str, **kw):
    torch.manual_seed(0)
    return online_detector(OnlineConfig(arch=arch, **(SMALL | kw))).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_predictions_ignore_the_future(arch):
    model = small_model(arch)
    x = torch.randn(3, 20, 6)
    logits, _ = model(x)
    for t in (0, 7, 18):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :]) * 5
        again, _ = model(changed)
        assert torch.equal(again[:, : t + 1], logits[:, : t + 1])
        assert not torch.allclose(again[:, t + 1 :], logits[:, t + 1 :])


@pytest.mark.parametrize("arch", ARCHS)
def test_a_stream_run_in_pieces_with_the_state_carried_equals_the_whole(arch):
    model = small_model(arch)
    x = torch.randn(2, 23, 6)
    whole, _ = model(x)
    state, pieces = None, []
    for start, end in ((0, 3), (3, 4), (4, 15), (15, 23)):  # pieces shorter than the IDN window too
        logits, state = model(x[:, start:end], state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), whole, atol=1e-6, rtol=1e-5)
    for chunk in (7, 11, 23, 30):  # 23 = 2 x 11 + 1: a last chunk of one frame
        probabilities = model.stream_probabilities(x, chunk=chunk)
        torch.testing.assert_close(probabilities, whole.softmax(-1), atol=1e-6, rtol=1e-5)


def test_idu_follows_its_equations_step_by_step():
    torch.manual_seed(1)
    idu = IDU(5, 4)
    e = torch.randn(3, 6, 5)
    W_tz, W_th = idu.frame.weight.chunk(2)
    b_z, b_h = idu.frame.bias.chunk(2)
    W_0r, W_0z = idu.current.weight.chunk(2)
    for b in range(3):
        h = torch.zeros(4)
        e0 = e[b, -1]
        for t in range(6):
            r = torch.sigmoid(idu.reset_h.weight @ h + idu.reset_h.bias + W_0r @ e0)
            z = torch.sigmoid(W_tz @ e[b, t] + b_z + W_0z @ e0)
            c = torch.tanh(W_th @ e[b, t] + b_h + idu.candidate_h.weight @ (r * h))
            h = (1 - z) * c + z * h
        torch.testing.assert_close(idu(e)[b], h, atol=1e-6, rtol=1e-5)


def test_idu_skips_frames_before_the_stream_as_if_the_window_were_shorter():
    torch.manual_seed(2)
    idu = IDU(5, 4)
    e = torch.randn(2, 6, 5)
    valid = torch.tensor([[False, False, True, True, True, True]] * 2)
    torch.testing.assert_close(idu(e, valid), idu(e[:, 2:]), atol=1e-6, rtol=1e-5)


def test_frame_cross_entropy_averages_scored_frames_with_multi_hot_rows():
    logits = torch.randn(2, 5, 4)
    target = F.one_hot(torch.randint(0, 4, (2, 5)), 4).float()
    target[0, 1] = 0  # not scored
    target[1, 2, 3] = 1  # two classes: -log p_a - log p_b (TRN's loss)
    log_p = logits.log_softmax(-1)
    per_frame = -(target * log_p).sum(-1)
    expected = per_frame.sum() / 9
    torch.testing.assert_close(frame_cross_entropy(logits, target), expected)
    in64 = frame_cross_entropy(logits.double(), target.double())  # float64 stays float64
    assert in64.dtype == torch.float64
    torch.testing.assert_close(
        in64, (-(target.double() * logits.double().log_softmax(-1)).sum() / 9), rtol=1e-14, atol=0
    )


def test_trn_decoder_step_j_is_scored_against_frame_t_plus_j_plus_one():
    model = small_model("trn", dropout=0.0)
    x = torch.randn(2, 9, 6)
    target = F.one_hot(torch.randint(0, 4, (2, 9)), 4).float()
    encoded, anticipated, _ = model.run(x)
    assert anticipated.shape == (2, 9, 3, 4)
    nll, count = 0.0, 0
    for t in range(9):
        for j in range(3):
            if t + j + 1 < 9:
                nll -= (target[:, t + j + 1] * anticipated[:, t, j].log_softmax(-1)).sum()
                count += 2
    losses = model.loss({"x": x, "target": target})
    torch.testing.assert_close(losses["decoder"], nll / count, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["encoder"], frame_cross_entropy(encoded, target))


def test_idn_contrastive_term_pulls_same_class_pairs_and_pushes_others_past_the_margin():
    """With every embedding equal (distance 0), each scored (frame, current frame) pair of
    different classes costs margin^2 and each same-class pair 0."""
    model = small_model("idn", margin=1.5)
    with torch.no_grad():
        model.embed[0].weight.zero_()
        model.embed[0].bias.fill_(0.3)
    labels = torch.randint(0, 4, (2, 10))
    target = F.one_hot(labels, 4).float()
    W = model.config.window
    different, pairs = 0, 0
    for b in range(2):
        for t in range(10):
            for s in range(max(0, t - W + 1), t + 1):
                pairs += 1
                different += int(labels[b, s] != labels[b, t])
    contrastive = model.loss({"x": torch.randn(2, 10, 6), "target": target})["contrastive"]
    torch.testing.assert_close(contrastive, torch.tensor(1.5**2 * different / pairs))


def test_idn_embedding_classifier_is_scored_on_each_frame_own_label_and_terms_add_up():
    model = small_model("idn", dropout=0.0, embedding_weight=0.3)
    x = torch.randn(2, 10, 6)
    target = F.one_hot(torch.randint(0, 4, (2, 10)), 4).float()
    losses = model.loss({"x": x, "target": target})
    per_frame = model.embedding_classifier(model.embed(x))  # frame t's embedding, classified
    expected = -(target * per_frame.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(losses["embedding"], expected, atol=1e-6, rtol=1e-5)
    logits, _ = model(x)
    torch.testing.assert_close(losses["action"], frame_cross_entropy(logits, target), atol=1e-6, rtol=1e-5)
    total = losses["action"] + 0.3 * (losses["embedding"] + losses["contrastive"])
    torch.testing.assert_close(losses["loss"].detach(), total, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_short_training_run_learns_to_detect_actions(arch):
    from deepzoo.metrics.online import per_frame_map

    config = StreamConfig(actions=3, primitives=4, steps=2, dim=8, noise=0.3, distractor=0.0)
    train = chunk_streams(synthetic_streams(16, 256, 0, config), 32)
    test = synthetic_streams(4, 256, 1, config)
    torch.manual_seed(0)
    model = online_detector(
        OnlineConfig(arch=arch, input_dim=8, num_classes=4, embed=16, hidden=24, decoder_steps=2, window=8)
    )

    def test_map() -> float:
        model.eval()
        return per_frame_map(model.stream_probabilities(test.tensors["x"]), test.tensors["target"])["map"]

    before = test_map()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(200):
        batch = train[torch.randint(0, len(train), (32,), generator=generator)]
        optimizer.zero_grad()
        model.loss(batch)["loss"].backward()
        optimizer.step()
    after = test_map()
    # seeds 0-4 reach 0.79-0.98 from 0.09-0.40 (the grammar, hence the ceiling, varies by seed)
    assert after > 0.7 and after > before + 0.4, (before, after)


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast_trains_and_stays_causal(arch):
    """The bf16 path (the trainer's autocast on CPUs with AMX and on GPUs), forced: finite losses
    and gradients, and still no look at the future."""
    model = small_model(arch).train()
    x = torch.randn(2, 12, 6)
    target = F.one_hot(torch.randint(0, 4, (2, 12)), 4).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss({"x": x, "target": target})["loss"]
    loss.backward()
    assert torch.isfinite(loss) and all(
        torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None
    )
    model.eval()
    changed = x.clone()
    changed[:, 6:] += 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, _ = model(x)
        b, _ = model(changed)
    assert torch.equal(a[:, :6], b[:, :6])


class _Twice(torch.nn.Module):
    """A deterministic stand-in for dropout: shows where the model applies it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


@pytest.mark.parametrize("dropout", ["none", "twice"])
def test_trn_follows_its_equations_step_by_step(dropout):
    """The encoder cell reads d([e_t, f_{t-1}]) (f_0 = 0); the decoder starts from (ReLU(W h_t),
    ReLU(W' c_t)) with input 0, then d(ReLU(W'' logits of the step before)), the logits read from
    d(h^dec); f_t = mean_j ReLU(W_f h^dec_j) of the states before d; one classifier for both (the
    encoder's logits read d(h_t)). Written out with the model's own cells and layers, d the
    dropout: none, or a stand-in doubling what it reads, which shows where it is applied."""
    model = small_model("trn", dropout=0.0)
    if dropout == "twice":
        model.drop = _Twice()
    d = model.drop
    x = torch.randn(2, 6, 6)
    encoded, anticipated, (h_end, c_end, f_end) = model.run(x)
    e = model.embed(x)
    h = c = torch.zeros(2, 12)
    future = torch.zeros(2, 8)
    for t in range(6):
        h, c = model.encoder(d(torch.cat([e[:, t], future], -1)), (h, c))
        torch.testing.assert_close(encoded[:, t], model.classifier(d(h)))
        dh, dc = torch.relu(model.h_to_decoder[0](h)), torch.relu(model.c_to_decoder[0](c))
        step_input, states = torch.zeros(2, 12), []
        for j in range(3):
            dh, dc = model.decoder(d(step_input), (dh, dc))
            scores = model.classifier(d(dh))
            torch.testing.assert_close(anticipated[:, t, j], scores, atol=1e-6, rtol=1e-5)
            step_input = torch.relu(model.scores_to_input[0](scores))
            states.append(dh)
        future = torch.stack([torch.relu(model.future[0](s)) for s in states]).mean(0)
    for got, want in ((h_end, h), (c_end, c), (f_end, future)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ["lstm", "idn"])
def test_dropout_acts_on_the_recurrent_input_and_the_classifier_input(arch):
    """LSTM: classifier(d(LSTM(d(e)))); IDN: classifier(d(IDU(d(window of e)))), d the dropout,
    here a stand-in doubling what it reads (the IDN's first frames: a window of frames 0..t)."""
    model = small_model(arch, dropout=0.0)
    model.drop = _Twice()
    x = torch.randn(2, 4, 6)
    logits, _ = model(x)
    e = model.embed(x)
    if arch == "lstm":
        want = model.classifier(2 * model.lstm(2 * e)[0])
    else:
        want = torch.stack([model.classifier(2 * model.idu(2 * e[:, : t + 1])) for t in range(4)], 1)
        target = F.one_hot(torch.randint(0, 4, (2, 4)), 4).float()
        action = model.loss({"x": x, "target": target})["action"]
        torch.testing.assert_close(action, frame_cross_entropy(want, target), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(logits, want, atol=1e-6, rtol=1e-5)


def test_trn_trains_on_the_sum_of_the_encoder_and_decoder_losses():
    """loss = CE(encoder logits, y_t) + CE(decoder step j, y_{t+j+1}): its value, and its
    gradient, that of both terms (the decoder's is not detached)."""
    model = small_model("trn", dropout=0.0)
    x = torch.randn(2, 6, 6)
    target = F.one_hot(torch.randint(0, 4, (2, 6)), 4).float()
    losses = model.loss({"x": x, "target": target})
    torch.testing.assert_close(losses["loss"].detach(), losses["encoder"] + losses["decoder"])
    encoded, anticipated, _ = model.run(x)
    future = torch.cat([target, torch.zeros(2, 3, 4)], 1)
    steps = torch.stack([future[:, j + 1 : j + 7] for j in range(3)], 2)
    want = frame_cross_entropy(encoded, target) + frame_cross_entropy(anticipated, steps)
    params = list(model.parameters())
    got_grads = torch.autograd.grad(losses["loss"], params, allow_unused=True)
    want_grads = torch.autograd.grad(want, params, allow_unused=True)
    for got, expected in zip(got_grads, want_grads):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    decoder = next(i for i, p in enumerate(params) if p is model.decoder.weight_hh)
    assert got_grads[decoder].abs().sum() > 0


def test_idn_windows_at_the_start_of_a_stream_hold_only_its_frames():
    """Frame t < window - 1 is classified from the IDU over frames 0..t alone (the window's slots
    before the stream are skipped), not over zero frames put before it."""
    model = small_model("idn", dropout=0.0)
    x = torch.randn(2, 9, 6)
    logits, _ = model(x)
    for t in range(4):
        h = model.idu(model.embed(x[:, : t + 1]))
        torch.testing.assert_close(logits[:, t], model.classifier(h), atol=1e-6, rtol=1e-5)


def test_idn_contrastive_term_equals_brute_force_with_unscored_frames():
    """Over the (frame s, current frame t) pairs of each window, both scored: |e_s - e_t|^2 where
    they share a class (multi-hot rows: any class in common), max(0, margin - |e_s - e_t|)^2
    otherwise, averaged; random embeddings (distances on both sides of the margin). Its gradient
    reaches the embedding through both frames of a pair (read off the loss as the difference
    between embedding weights 1 and 0, minus the embedding classifier's term)."""
    from dataclasses import replace

    model = small_model("idn", margin=1.2)
    x = torch.randn(2, 10, 6)
    labels = torch.randint(0, 4, (2, 10))
    target = F.one_hot(labels, 4).float()
    target[:, ::3, 1] = 1.0  # every third frame also of class 1
    target[0, 3] = target[1, 7] = 0  # not scored: neither as a frame nor as the current frame
    e = model.embed(x)
    W = model.config.window
    total, pairs, apart, shared_only = 0.0, 0, [], 0
    for b in range(2):
        for t in range(10):
            for s in range(max(0, t - W + 1), t + 1):
                if target[b, s].sum() == 0 or target[b, t].sum() == 0:
                    continue
                d = (e[b, s] - e[b, t]).norm()
                same = bool((target[b, s] * target[b, t]).sum() > 0)
                shared_only += int(same and not torch.equal(target[b, s], target[b, t]))
                total = total + (d**2 if same else (1.2 - d).clamp(min=0) ** 2)
                pairs += 1
                apart += [] if same else [d.item()]
    assert min(apart) < 1.2 < max(apart) and shared_only > 0
    batch = {"x": x, "target": target}
    contrastive = model.loss(batch)["contrastive"]
    torch.testing.assert_close(contrastive, total / pairs, atol=1e-6, rtol=1e-5)
    with_terms = model.loss(batch)["loss"]
    model.config = replace(model.config, embedding_weight=0.0)
    embedding_terms = with_terms - model.loss(batch)["loss"]
    want = total / pairs + frame_cross_entropy(model.embedding_classifier(e), target)
    weights = list(model.embed.parameters())
    got, expected = torch.autograd.grad(embedding_terms, weights), torch.autograd.grad(want, weights)
    for g, w in zip(got, expected):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_classifier_reads_dropped_out_features_in_training_only(arch):
    """Dropout p = 0.5 before the classifier: in training about half of what it reads is zero
    (each entry with probability p; 5 standard errors allowed), in evaluation none."""
    model = small_model(arch, dropout=0.5)
    seen = []
    model.classifier.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.randn(4, 16, 6)
    model.train()(x)
    read = torch.cat([s.flatten() for s in seen])
    assert abs((read == 0).float().mean().item() - 0.5) < 5 * (0.25 / len(read)) ** 0.5
    seen.clear()
    model.eval()(x)
    assert all((s != 0).all() for s in seen)


def test_trn_future_feature_reads_the_decoder_states_before_dropout():
    """TRN's released code feeds future_linear(dec_hx), the decoder's raw state, while its
    classifier reads dropped-out states: in training no entry the future layer reads is zeroed."""
    model = small_model("trn", dropout=0.5)
    seen = []
    model.future[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model.train()(torch.randn(4, 16, 6))
    assert len(seen) == 16 and all((s != 0).all() for s in seen)


def test_the_trn_cells_have_biases_as_torchs_lstm_cells():
    """TRN's released code builds its encoder and decoder with nn.LSTMCell's default bias=True;
    the step-by-step test cannot see a missing bias, since it reuses the model's own cells."""
    model = small_model("trn")
    for cell in (model.encoder, model.decoder):
        assert cell.bias_ih is not None and cell.bias_hh is not None


def test_a_config_names_a_known_model_and_at_least_two_classes():
    refused = [
        (dict(arch="gru"), "arch must be"),
        (dict(num_classes=1), "num_classes >= 2"),
        (dict(margin=0.0), "margin > 0"),
        (dict(dropout=1.0), "dropout < 1"),
        (dict(window=0), "window >= 1"),
    ]
    for bad, message in refused:
        with pytest.raises(ValueError, match=message):
            OnlineConfig(**bad)
    OnlineConfig(num_classes=2, margin=1e-3, dropout=0.0, window=1)  # the smallest that make sense

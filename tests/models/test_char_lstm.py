import torch
import torch.nn.functional as F

from deepzoo.data import TensorData
from deepzoo.data.shakespeare import VOCAB, load_shakespeare
from deepzoo.models.char_lstm import CharLSTM, CharLSTMConfig
from deepzoo.train import TrainConfig, Trainer


def _batch():
    return {"tokens": torch.randint(0, 65, (3, 21), generator=torch.Generator().manual_seed(0))}


def test_loss_is_next_character_cross_entropy_and_tbptt_keeps_the_value():
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(hidden=16, embed_dim=8, tbptt=0)).eval()
    batch = _batch()
    logits, _ = model(batch["tokens"][:, :-1])
    expected = F.cross_entropy(logits.flatten(0, 1), batch["tokens"][:, 1:].flatten())
    torch.testing.assert_close(model.loss(batch)["loss"], expected)
    truncated = CharLSTM(CharLSTMConfig(hidden=16, embed_dim=8, tbptt=6)).eval()
    truncated.load_state_dict(model.state_dict())
    torch.testing.assert_close(truncated.loss(batch)["loss"], expected)  # same forward value


def test_tbptt_changes_the_gradient_of_early_weights():
    torch.manual_seed(0)
    full = CharLSTM(CharLSTMConfig(hidden=16, embed_dim=8, tbptt=0))
    cut = CharLSTM(CharLSTMConfig(hidden=16, embed_dim=8, tbptt=5))
    cut.load_state_dict(full.state_dict())
    batch = _batch()
    full.loss(batch)["loss"].backward()
    cut.loss(batch)["loss"].backward()
    assert not torch.allclose(full.embed.weight.grad, cut.embed.weight.grad)


def test_deepzoo_and_torch_lstm_backends_agree():
    torch.manual_seed(0)
    a = CharLSTM(CharLSTMConfig(hidden=16, embed_dim=8, backend="torch"))
    b = CharLSTM(CharLSTMConfig(hidden=16, embed_dim=8, backend="deepzoo"))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.loss(_batch())["loss"], b.loss(_batch())["loss"])


def test_short_training_lowers_validation_loss_and_samples_text(tmp_path):
    train = TensorData(load_shakespeare("train", 64)[slice(0, 2000)])
    val = TensorData(load_shakespeare("val", 64)[slice(0, 100)])
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(hidden=64, embed_dim=16, layers=1, tbptt=32, charset=VOCAB))
    with torch.no_grad():
        before = model.loss(val.tensors)["loss"].item()  # about log 65 = 4.17
    cfg = TrainConfig(
        steps=150, batch_size=32, lr=5e-3, progress=False, precision="fp32", device="cpu", eval_every=150
    )
    result = Trainer(
        model, train, cfg, tmp_path, evaluate=lambda m, s, d: {"val_loss": m.loss(val.tensors)["loss"].item()}
    ).fit()
    assert before > 4.0 and result.metrics["val_loss"] < 2.8
    tokens = model.eval().sample(2, generator=torch.Generator().manual_seed(0), length=50)
    assert tokens.shape == (2, 50) and tokens.max() < len(VOCAB)
    texts = model.to_text(tokens)
    assert all(len(t) == 50 and set(t) <= set(VOCAB) for t in texts)


def test_generation_carries_the_state_and_draws_from_the_last_logits_over_temperature():
    """Each new token ~ softmax(f(x_1..x_t)[-1] / T): the carried LSTM state gives what re-reading
    the whole sequence gives (same draws from the same generator). The output layer is scaled up:
    an untrained one's near-uniform logits would draw the same tokens from any position."""
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(hidden=16, embed_dim=8)).eval()
    with torch.no_grad():
        model.head.weight.mul_(30)
    prompt = torch.randint(0, 65, (3, 4), generator=torch.Generator().manual_seed(1))
    drawn = model.generate(prompt, 8, temperature=0.5, generator=torch.Generator().manual_seed(2))
    generator, tokens = torch.Generator().manual_seed(2), prompt
    with torch.no_grad():
        for _ in range(8):
            logits, _ = model(tokens)  # the whole sequence again, from the zero state
            token = torch.multinomial(torch.softmax(logits[:, -1] / 0.5, dim=-1), 1, generator=generator)
            tokens = torch.cat([tokens, token], dim=1)
    assert torch.equal(drawn, tokens)
    sample = model.sample(3, length=6, generator=torch.Generator().manual_seed(3))
    start = torch.zeros(3, 1, dtype=torch.long)
    assert torch.equal(sample, model.generate(start, 6, generator=torch.Generator().manual_seed(3))[:, 1:])


def test_dropout_before_the_output_layer_acts_in_training_only():
    """One LSTM layer has no dropout between layers: what changes the logits is the dropout on h."""
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(hidden=16, embed_dim=8, layers=1, dropout=0.5))
    tokens = _batch()["tokens"]
    assert not torch.equal(model.train()(tokens)[0], model(tokens)[0])
    assert torch.equal(model.eval()(tokens)[0], model(tokens)[0])

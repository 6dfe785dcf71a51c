import torch

from deepzoo.data.digits import BOS, EOS, PAD, sorting_pairs
from deepzoo.models.seq2seq import Seq2Seq, Seq2SeqConfig


def _model(seed=0):
    torch.manual_seed(seed)
    return Seq2Seq(Seq2SeqConfig(dim=32, heads=4, encoder_layers=1, decoder_layers=2)).eval()


def test_sorting_pairs_are_framed_sorted_digits():
    data = sorting_pairs(50, seed=3)
    for source, target in zip(data.tensors["source"], data.tensors["target"]):
        digits = source[source != PAD]
        assert target[0] == BOS
        n = len(digits)
        assert torch.equal(target[1 : n + 1], digits.sort().values)
        assert target[n + 1] == EOS and (target[n + 2 :] == PAD).all()


def test_greedy_decoding_with_caches_equals_decoding_without():
    model = _model()
    source = sorting_pairs(6, seed=1).tensors["source"]
    assert torch.equal(model.greedy(source, 14), model.greedy(source, 14, use_cache=False))


def test_cached_decoder_steps_equal_the_full_decoder_pass():
    from deepzoo.nn.attention import KVCache

    model = _model()
    pairs = sorting_pairs(3, seed=2)
    memory, padding = model.encode(pairs.tensors["source"])
    target = pairs.tensors["target"][:, :9]
    full = model.decode(target, memory, padding)
    caches = [{"self": KVCache(), "cross": KVCache(static=True)} for _ in model.decoder]
    steps = torch.cat([model.decode(target[:, t : t + 1], memory, padding, caches) for t in range(9)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)


def test_extra_source_padding_changes_nothing():
    model = _model()
    source = sorting_pairs(4, seed=5).tensors["source"]
    longer = torch.cat([source, torch.full((4, 5), PAD)], dim=1)
    target = torch.full((4, 3), BOS)
    torch.testing.assert_close(model(source, target), model(longer, target), rtol=1e-5, atol=1e-5)


def test_short_training_lowers_the_loss():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(dim=32, heads=4, encoder_layers=1, decoder_layers=1))
    data = sorting_pairs(256, seed=0).tensors
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = model.loss(data)["loss"]
        first = first or loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.6 * first

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
    lengths = (sorting_pairs(2000, min_len=3, max_len=7, seed=1).tensors["source"] != PAD).sum(1)
    assert set(lengths.tolist()) == set(range(3, 8))  # min_len to max_len, both included


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


def test_the_loss_is_teacher_forced_next_token_cross_entropy_over_the_unpadded_targets():
    """-mean over (b, t) with target[b, t + 1] != PAD of log softmax(f(source_b, target_b[:t+1]))[-1]
    at target[b, t + 1], written out one prefix at a time."""
    model = _model()
    pairs = sorting_pairs(3, seed=4).tensors
    source, target = pairs["source"], pairs["target"]
    terms = []
    with torch.no_grad():
        for b in range(3):
            for t in range(target.shape[1] - 1):
                if target[b, t + 1] != PAD:
                    logits = model(source[b : b + 1], target[b : b + 1, : t + 1])[0, -1]
                    terms.append(-torch.log_softmax(logits, dim=0)[target[b, t + 1]])
        loss = model.loss(pairs)["loss"]
    assert (target == PAD).any()  # the case is exercised
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def test_greedy_output_keeps_the_first_eos_and_pads_after_it():
    model = _model()
    script = torch.tensor([[5, EOS, 7, EOS, 3], [EOS, 2, 2, 2, 2]])  # the argmax at each step
    calls = []

    def decode(step_input, memory, padding, caches=None):
        logits = torch.nn.functional.one_hot(script[:, len(calls)], 13).float()
        calls.append(1)
        return logits[:, None]

    model.decode = decode
    out = model.greedy(sorting_pairs(2, seed=0).tensors["source"], 5)
    assert out.tolist() == [[5, EOS, PAD, PAD, PAD], [EOS, PAD, PAD, PAD, PAD]]


def test_the_encoder_knows_source_order_and_normalizes_its_memory():
    """Without positions, self-attention is permutation-equivariant: permuting the source would
    permute the memory. The memory leaves the final LayerNorm (weight 1, bias 0 at init)."""
    model = _model()
    source = torch.tensor([[1, 6, 3, 7, 9], [2, 0, 6, 5, 3]])  # digits, no padding
    perm = torch.tensor([4, 2, 0, 3, 1])
    with torch.no_grad():
        memory, _ = model.encode(source)
        permuted, _ = model.encode(source[:, perm])
    assert (permuted - memory[:, perm]).abs().max() > 1e-2
    torch.testing.assert_close(memory.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(memory.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-3, rtol=0)


def test_the_decoder_knows_the_order_of_its_prefix_through_rotary_positions():
    """A one-block decoder without positions is blind to the order of the target tokens before
    the last one (self-attention sums over their set; cross-attention and the MLP act per
    position); with rotary positions in its self-attention the last logits depend on it."""
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(dim=32, heads=4, encoder_layers=1, decoder_layers=1)).eval()
    with torch.no_grad():
        for weight in (p for p in model.parameters() if p.ndim == 2):
            weight.mul_(3)  # attention far from uniform, yet not all on one token
    source = torch.tensor([[3, 1, 4, 1, 5]])
    prefix, permuted = torch.tensor([[BOS, 2, 7, 9, 4]]), torch.tensor([[9, 7, BOS, 2, 4]])
    # seeds 0-99: the last logits move by 0.24 at least; without rope by 2e-6 at most
    assert (model(source, prefix)[:, -1] - model(source, permuted)[:, -1]).abs().max() > 1e-2
    model.rope = None
    torch.testing.assert_close(
        model(source, prefix)[:, -1], model(source, permuted)[:, -1], rtol=0, atol=5e-5
    )


def test_a_float64_model_keeps_its_loss_in_float64():
    model = _model().double()
    pairs = sorting_pairs(3, seed=2).tensors
    loss = model.loss(pairs)["loss"]
    logits = model(pairs["source"], pairs["target"][:, :-1])
    expected = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), pairs["target"][:, 1:].flatten(), ignore_index=PAD
    )
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-14, atol=0)

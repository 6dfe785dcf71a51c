import pytest
import torch

from deepzoo.models.gpt import GPT, GPTConfig, sample_next

SMALL = dict(vocab_size=11, block_size=16, layers=2, heads=2, dim=16)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope", "alibi"])
def test_gpt_is_causal(positions):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, positions=positions)).eval()
    tokens = torch.randint(0, 11, (2, 12))
    changed = tokens.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 11
    torch.testing.assert_close(model(tokens)[:, :7], model(changed)[:, :7])


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope", "alibi"])
def test_generation_with_kv_cache_equals_generation_without_also_past_the_block(positions):
    """4 + 30 tokens with a 16-token block: the window slides past the block for every scheme
    (learned positions included) and the cached run draws exactly the uncached run's tokens."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, positions=positions)).eval()
    prompt = torch.randint(0, 11, (3, 4))
    with_cache = model.generate(prompt, 30, top_k=5, generator=torch.Generator().manual_seed(1))
    without = model.generate(prompt, 30, top_k=5, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert with_cache.shape == (3, 34) and torch.equal(with_cache, without)
    greedy = model.generate(prompt, 30, temperature=0)
    assert torch.equal(greedy, model.generate(prompt, 30, temperature=0, use_cache=False))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sample_frequencies_follow_softmax_of_logits_over_temperature(temperature):
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    n = 200_000
    tokens = sample_next(logits.expand(n, 4), temperature, generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens.flatten(), minlength=4).double() / n
    expected = torch.softmax(logits[0].double() / temperature, dim=0)
    # each frequency has standard deviation sqrt(p (1 - p) / n) <= 0.0012; allow 5 of them
    torch.testing.assert_close(frequencies, expected, rtol=0, atol=5 * 0.5 / n**0.5)


def test_output_layer_is_tied_to_the_embedding():
    model = GPT(GPTConfig(**SMALL))
    assert model.head.weight is model.embed.weight


def test_top_k_sampling_never_leaves_the_top_k():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 4.5]]).repeat(500, 1)
    tokens = sample_next(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(tokens.flatten().tolist()) == {1, 4}
    assert sample_next(logits[:1], temperature=0).item() == 1


def test_gpt_learns_a_repeating_sequence():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL))
    tokens = torch.arange(17).remainder(11).repeat(8, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = model.loss({"tokens": tokens})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3  # chance: log 11 = 2.4


def test_tied_weights_survive_a_checkpoint_round_trip(tmp_path):
    from deepzoo.train import checkpoint as ckpt

    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL))
    ckpt.write_bytes(tmp_path / "w.safetensors", ckpt.weights_bytes(model, 3))
    torch.manual_seed(1)
    loaded = GPT(GPTConfig(**SMALL))
    ckpt.load_weights(tmp_path / "w.safetensors", loaded)
    assert loaded.head.weight is loaded.embed.weight
    tokens = torch.randint(0, 11, (2, 5))
    torch.testing.assert_close(loaded(tokens), model(tokens))

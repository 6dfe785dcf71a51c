from dataclasses import replace

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


def test_the_loss_is_the_next_token_cross_entropy():
    """L = -1/(B T) sum_{b,t} log softmax(f(x_{<=t}))[x_{t+1}], written out position by position."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL)).eval()
    tokens = torch.randint(0, 11, (2, 9))
    nll = [
        -torch.log_softmax(model(tokens[b : b + 1, : t + 1])[0, -1], dim=0)[tokens[b, t + 1]]
        for b in range(2)
        for t in range(8)
    ]
    torch.testing.assert_close(model.loss({"tokens": tokens})["loss"], torch.stack(nll).mean())


def test_generation_reads_the_last_block_of_a_long_prompt_and_can_be_limited_to_low_ids():
    """A 20-token prompt with a 16-token block: the network only ever reads the last 16 tokens
    (rotary positions would accept all 20); max_token=5 draws only ids 0..4."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL)).eval()
    prompt = torch.randint(0, 11, (4, 20))
    read, features = [], model.features
    model.features = lambda tokens, *args: read.append(tokens) or features(tokens, *args)
    for use_cache in (True, False):
        read.clear()
        model.generate(prompt, 3, temperature=0, use_cache=use_cache)
        assert torch.equal(read[0], prompt[:, -16:]) and max(t.shape[1] for t in read) <= 16
    del model.features
    drawn = model.generate(prompt, 40, generator=torch.Generator().manual_seed(0), max_token=5)[:, 20:]
    assert drawn.max() < 5 and len(drawn.unique()) == 5


def test_sample_returns_the_drawn_tokens_without_the_newline_it_starts_from():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL)).eval()
    drawn = model.sample(3, length=6, generator=torch.Generator().manual_seed(2))
    full = model.generate(torch.zeros(3, 1, dtype=torch.long), 6, generator=torch.Generator().manual_seed(2))
    assert drawn.shape == (3, 6) and torch.equal(drawn, full[:, 1:])


def test_residual_projections_start_with_gpt2s_scaled_deviation():
    """std 0.02 / sqrt(2 N) for the attention and MLP output projections of N blocks, 0.02 for the
    rest; 4,096+ weights each: 10 standard errors of a deviation estimate are 11%."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=16, layers=4, heads=2, dim=64))
    scaled = 0.02 / 8**0.5
    for block in model.blocks:
        for proj in (block.attn.out_proj, block.mlp.proj):
            assert proj.weight.std().item() == pytest.approx(scaled, rel=0.11)
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.2)  # 704 weights


def test_the_blocks_read_the_embeddings_after_dropout():
    """In training, the first block's input is dropout(embedding + position): each entry zeroed
    with probability p or scaled by 1 / (1 - p); in evaluation the embedding itself."""
    torch.manual_seed(0)
    p = 0.5
    model = GPT(GPTConfig(**SMALL, dropout=p, positions="learned"))
    tokens = torch.randint(0, 11, (4, 16))
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    embedded = model.positions(model.embed(tokens), 0).detach()
    model.train()(tokens)
    kept = seen[-1] != 0
    torch.testing.assert_close(seen[-1][kept], embedded[kept] / (1 - p))
    # 2048 entries each dropped with p = 0.5: the share dropped is 0.5 +- 0.011 (one standard error)
    assert abs((~kept).float().mean().item() - p) < 0.06
    model.eval()(tokens)
    torch.testing.assert_close(seen[-1], embedded)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope", "alibi"])
def test_each_position_scheme_makes_the_output_depend_on_the_order_of_the_context(positions):
    """Without positions, a one-block causal Transformer's last output is a softmax-weighted sum
    over the set of tokens before it: blind to their order. Every scheme breaks that symmetry.
    Learned positions are a (block_size, dim) table of parameters; sinusoidal ones a fixed
    function; rope and alibi act inside attention."""
    torch.manual_seed(0)
    config = GPTConfig(**SMALL | {"layers": 1}, positions=positions)
    model = GPT(config).eval()
    with torch.no_grad():
        for weight in (p for p in model.parameters() if p.ndim == 2):
            weight.mul_(10)  # std 0.2: attention far from uniform
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    permuted = torch.tensor([[6, 4, 2, 1, 3, 5, 7]])
    # seeds 0-99: the last logits move by 0.012 at least (sinusoidal), without positions by 1e-6 at most
    assert (model(tokens)[:, -1] - model(permuted)[:, -1]).abs().max() > 1e-3
    table = [p for name, p in model.named_parameters() if name.startswith("positions.")]
    assert [tuple(p.shape) for p in table] == ([(16, 16)] if positions == "learned" else [])
    model.positions, model.rope = None, None
    model.config = replace(config, positions="learned")  # not alibi: no score bias either
    torch.testing.assert_close(model(tokens)[:, -1], model(permuted)[:, -1], rtol=0, atol=1e-5)


def test_extra_conditioning_is_added_to_the_token_embeddings():
    """features(a, extra = E[b] - E[a]) = features(b): the extra rows enter exactly where the
    embeddings do, before positions and blocks."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, positions="learned")).eval()
    a, b = torch.randint(0, 11, (2, 9)), torch.randint(0, 11, (2, 9))
    extra = model.embed(b) - model.embed(a)
    torch.testing.assert_close(model.features(a, extra=extra), model.features(b), rtol=1e-5, atol=1e-5)


def test_the_features_pass_a_final_layer_norm_and_linear_biases_start_at_zero():
    """GPT-2's ln_f: the features are LayerNorm(last block's output) (at initialization weight 1,
    bias 0); with bias=True every Linear bias starts at 0 (GPT-2's init)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, bias=True)).eval()
    seen = []
    model.blocks[-1].register_forward_hook(lambda module, args, out: seen.append(out))
    features = model.features(torch.randint(0, 11, (3, 10)))
    torch.testing.assert_close(features, torch.nn.functional.layer_norm(seen[0], (16,)))
    biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None]
    assert len(biases) >= 4 * 2 and all((b == 0).all() for b in biases)


def test_sample_passes_top_k_on():
    """top_k = 1 keeps one token per step: `sample` then draws the greedy sequence."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL)).eval()
    drawn = model.sample(3, length=8, top_k=1, generator=torch.Generator().manual_seed(2))
    greedy = model.generate(torch.zeros(3, 1, dtype=torch.long), 8, temperature=0)[:, 1:]
    assert torch.equal(drawn, greedy)


def test_a_float64_model_keeps_float64_through_attention_and_the_loss():
    """A float64 GPT is what a gradient check runs: nothing inside may round to float32."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, attention_kernel="math")).double()
    tokens = torch.randint(0, 11, (2, 9))
    loss = model.loss({"tokens": tokens})["loss"]
    assert loss.dtype == torch.float64
    logits = model(tokens[:, :-1])
    expected = -torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None]).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-14, atol=0)

import math

import pytest
import torch
from torch import nn

from deepzoo.nn.attention import KVCache, MultiHeadAttention, attention_bias, attention_reference
from deepzoo.nn.positions import (
    LearnedPositions,
    RotaryEmbedding,
    SinusoidalPositions,
    alibi_bias,
    alibi_slopes,
    sinusoidal_table,
)


def _mha(dim=16, heads=4, seed=0, kernel="sdpa"):
    torch.manual_seed(seed)
    return MultiHeadAttention(dim, heads, kernel=kernel)


def test_reference_attention_is_the_notes_equation_for_one_query():
    q, k, v = torch.randn(1, 1, 1, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 3)
    e = (k[0, 0] @ q[0, 0, 0]) / 2.0  # e_i = q . k_i / sqrt(D_Q)
    a = torch.softmax(e, dim=0)
    expected = (a[:, None] * v[0, 0]).sum(0)
    torch.testing.assert_close(attention_reference(q, k, v)[0, 0, 0], expected)


def test_equals_torch_multihead_attention_with_copied_weights():
    ours = _mha(16, 4)
    theirs = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    x, context = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    padding = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    torch.testing.assert_close(ours(x), theirs(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    torch.testing.assert_close(
        ours(x, causal=True), theirs(x, x, x, attn_mask=causal, need_weights=False)[0], rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        ours(x, context, key_padding_mask=padding),
        theirs(x, context, context, key_padding_mask=padding, need_weights=False)[0],
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("positions", ["none", "rope", "alibi"])
def test_sdpa_path_equals_reference_path_with_masks(causal, positions):
    attn = _mha()
    x = torch.randn(3, 6, 16)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[1, 4:] = True
    kw = dict(
        causal=causal,
        key_padding_mask=padding,
        alibi=positions == "alibi",
        rope=RotaryEmbedding(4) if positions == "rope" else None,
    )
    torch.testing.assert_close(attn(x, **kw), attn(x, reference=True, **kw), rtol=1e-5, atol=1e-5)


def test_causal_attention_ignores_future_tokens():
    attn = _mha()
    x = torch.randn(2, 8, 16)
    changed = x.clone()
    changed[:, 5:] = torch.randn(2, 3, 16)
    torch.testing.assert_close(attn(x, causal=True)[:, :5], attn(changed, causal=True)[:, :5])
    assert not torch.allclose(attn(x)[:, :5], attn(changed)[:, :5])  # without the mask it would look


def test_padding_mask_ignores_padded_keys():
    attn = _mha()
    x, context = torch.randn(1, 3, 16), torch.randn(1, 6, 16)
    padded = torch.cat([context[:, :4], torch.randn(1, 2, 16) * 100], dim=1)
    mask = torch.tensor([[False] * 4 + [True] * 2])
    torch.testing.assert_close(attn(x, padded, key_padding_mask=mask), attn(x, context[:, :4]))


def test_rope_scores_depend_only_on_relative_position_and_keep_norms():
    rope = RotaryEmbedding(8)
    q, k = torch.randn(8), torch.randn(8)

    def score(m, n):
        qm = rope(q.view(1, 1, 1, 8).expand(1, 1, m + 1, 8))[0, 0, m]
        kn = rope(k.view(1, 1, 1, 8).expand(1, 1, n + 1, 8))[0, 0, n]
        return qm @ kn

    for shift in (1, 5, 37):
        torch.testing.assert_close(score(3, 7), score(3 + shift, 7 + shift), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(score(9, 2), score(9 + shift, 2 + shift), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(score(3, 7), score(3, 8))
    x = torch.randn(2, 3, 50, 8)
    torch.testing.assert_close(rope(x).norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rope(x[:, :, 10:], offset=10), rope(x)[:, :, 10:])
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)


def test_rope_rotates_pairs_by_position_times_frequency():
    rope = RotaryEmbedding(4, base=100.0)
    x = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 4).expand(1, 1, 3, 4)
    out = rope(x)[0, 0, 2]  # position 2: angles 2 * theta_i, theta = (1, 100^-0.5)
    angles = torch.tensor([2.0, 2.0 * 0.1])
    torch.testing.assert_close(out, torch.stack([angles.cos(), angles.sin()], dim=1).flatten())
    default = RotaryEmbedding(4)(x)[0, 0, 2]  # RoFormer's base 10000: theta = (1, 10000^-0.5)
    angles = torch.tensor([2.0, 2.0 * 0.01])
    torch.testing.assert_close(default, torch.stack([angles.cos(), angles.sin()], dim=1).flatten())


@pytest.mark.parametrize("pairs", ["interleaved", "halves"])
def test_rope_rotates_float64_inputs_by_float64_angles(pairs):
    """cos and sin of m theta_i in float64 (a float32 table would be off by ~1e-8), also past the
    first table's end."""
    rope = RotaryEmbedding(8, max_len=16, pairs=pairs)
    x = torch.randn(1, 2, 40, 8, dtype=torch.float64)
    theta = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    angles = torch.arange(40, dtype=torch.float64)[:, None] * theta  # (T, 4)
    if pairs == "interleaved":
        first, second = x[..., 0::2], x[..., 1::2]
    else:
        first, second = x[..., :4], x[..., 4:]
    out_first = first * angles.cos() - second * angles.sin()
    out_second = first * angles.sin() + second * angles.cos()
    out = rope(x)
    assert out.dtype == torch.float64
    got_first, got_second = (out[..., 0::2], out[..., 1::2]) if pairs == "interleaved" else out.chunk(2, -1)
    torch.testing.assert_close(got_first, out_first, rtol=0, atol=1e-14)
    torch.testing.assert_close(got_second, out_second, rtol=0, atol=1e-14)


def test_rope_on_halves_is_the_llama_form_and_the_interleaved_one_on_permuted_features():
    """pairs="halves" rotates (x_i, x_i+d/2) by m theta_i: q cos + rotate_half(q) sin with
    cos = cat(cos(m theta), cos(m theta)), the GPT-NeoX / LLaMA form, written out here; and it is
    the interleaved rotation of the features reordered x_0, x_d/2, x_1, x_d/2+1, ..."""
    d, base = 8, 50.0
    x = torch.randn(2, 3, 11, d)
    theta = base ** (-torch.arange(0, d, 2).double() / d)
    angles = torch.arange(11).double()[:, None] * theta
    cos, sin = torch.cat([angles.cos()] * 2, -1).float(), torch.cat([angles.sin()] * 2, -1).float()
    rotate_half = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], dim=-1)
    halves = RotaryEmbedding(d, base=base, pairs="halves")
    torch.testing.assert_close(halves(x), x * cos + rotate_half * sin)
    order = torch.arange(d).view(2, d // 2).T.flatten()  # 0, d/2, 1, d/2 + 1, ...
    interleaved = RotaryEmbedding(d, base=base)
    torch.testing.assert_close(interleaved(x[..., order]), halves(x)[..., order])
    assert not torch.allclose(interleaved(x), halves(x))
    torch.testing.assert_close(halves(x[:, :, 4:], offset=4), halves(x)[:, :, 4:])
    grown = RotaryEmbedding(d, base=base, max_len=3, pairs="halves")  # its tables grow to 11 steps
    torch.testing.assert_close(grown(x), halves(x))
    with pytest.raises(ValueError, match="pairs"):
        RotaryEmbedding(d, pairs="adjacent")


def test_configs_refuse_heads_that_do_not_split_the_width_or_leave_rope_an_odd_one():
    from deepzoo.models.gpt import GPTConfig
    from deepzoo.models.seq2seq import Seq2SeqConfig

    with pytest.raises(ValueError, match="divisor"):
        GPTConfig(dim=128, heads=5, positions="learned")
    with pytest.raises(ValueError, match="even"):
        GPTConfig(dim=42, heads=6, positions="rope")
    assert GPTConfig(dim=42, heads=6, positions="learned").heads == 6  # 7-wide heads need no pairs
    with pytest.raises(ValueError, match="divisor"):
        Seq2SeqConfig(dim=64, heads=3)


def test_alibi_and_sinusoidal_tables():
    assert torch.allclose(alibi_slopes(8), 2.0 ** (-torch.arange(1, 9.0)))
    bias = alibi_bias(2, 3, 3)
    assert bias[0, 2, 0] == -2 * 2**-4 and bias[1, 1, 1] == 0
    table = sinusoidal_table(10, 6)
    assert table[3, 0] == torch.sin(torch.tensor(3.0)) and table[3, 1] == torch.cos(torch.tensor(3.0))


def test_kv_cache_gives_the_same_outputs_as_full_causal_attention():
    attn = _mha()
    rope = RotaryEmbedding(4)
    x = torch.randn(2, 7, 16)
    full = attn(x, causal=True, rope=rope)
    cache = KVCache()
    steps = [attn(x[:, :3], causal=True, rope=rope, cache=cache)]
    steps += [attn(x[:, t : t + 1], causal=True, rope=rope, cache=cache) for t in range(3, 7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_bias_marks_causal_and_padding():
    bias = attention_bias(
        2, 4, causal=True, offset=2, key_padding_mask=torch.tensor([[False, True, False, False]])
    )
    allowed = torch.isfinite(bias[0, 0])
    assert allowed.tolist() == [[True, False, True, False], [True, False, True, True]]


def test_math_kernel_equals_sdpa_kernel():
    x = torch.randn(2, 6, 16)
    sdpa, math = _mha(kernel="sdpa"), _mha(kernel="math")
    torch.testing.assert_close(math(x, causal=True), sdpa(x, causal=True), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="kernel"):
        MultiHeadAttention(16, 4, kernel="flash")


def test_width_must_split_into_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)


def test_alibi_slopes_for_a_head_count_that_is_not_a_power_of_two():
    """Press et al.: the 4 slopes of 4 heads, then every other slope of 8 heads."""
    expected = torch.tensor([2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3])
    assert torch.equal(alibi_slopes(6), expected)


def test_attention_bias_equals_a_hand_built_mask():
    """Causal with an offset, key padding and ALiBi, against loops over (b, h, i, j): the
    SDPA-vs-reference tests share attention_bias, so its values are checked on their own here."""
    T, S, offset, heads = 3, 6, 2, 3
    padding = torch.tensor([[False, False, True, False, False, False], [False] * 5 + [True]])
    bias = attention_bias(T, S, causal=True, offset=offset, key_padding_mask=padding, alibi_heads=heads)
    slopes = [2**-4, 2**-8, 2**-2]  # 3 heads: the 2 slopes of 2 heads, then the first of 4 heads' odd ones
    expected = torch.empty(2, heads, T, S)
    for b in range(2):
        for h in range(heads):
            for i in range(T):
                for j in range(S):
                    visible = j <= offset + i and not padding[b, j]
                    expected[b, h, i, j] = -slopes[h] * abs(offset + i - j) if visible else float("-inf")
    assert bias.shape == (2, heads, T, S)
    assert torch.equal(bias, expected)


def test_sinusoidal_table_is_the_papers_formula_at_every_position_and_frequency():
    """P[t, 2i] = sin(t / 10000^(2i / D)), P[t, 2i + 1] = cos(t / 10000^(2i / D))."""
    D = 8
    table = sinusoidal_table(50, D).double()
    for t in range(50):
        for i in range(D // 2):
            angle = t / 10000 ** (2 * i / D)
            assert table[t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


@pytest.mark.parametrize("pairs", ["interleaved", "halves"])
def test_rope_decodes_one_step_at_a_time_past_its_table(pairs):
    """A KV-cache decode rotates one query at offsets 0, 1, 2, ...: each must be rotated by its
    own position, including the step that lands exactly at the table's end (where a table one row
    short would rotate by nothing, or return an empty slice)."""
    x = torch.randn(2, 3, 1, 8)
    full = RotaryEmbedding(8, pairs=pairs, max_len=64)
    grown = RotaryEmbedding(8, pairs=pairs, max_len=4)
    for offset in range(20):
        torch.testing.assert_close(grown(x, offset), full(x, offset), msg=f"offset {offset}")


def test_sinusoidal_positions_continue_past_their_table_at_an_offset():
    positions = SinusoidalPositions(6, max_len=8)
    x = torch.zeros(1, 4, 6)
    torch.testing.assert_close(positions(x, offset=6)[0], sinusoidal_table(10, 6)[6:10])


def test_learned_positions_start_small_and_refuse_steps_past_their_table():
    torch.manual_seed(0)
    positions = LearnedPositions(64, max_len=512)
    assert positions.embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)  # GPT-2's init
    x = torch.zeros(2, 3, 64)
    torch.testing.assert_close(positions(x, offset=4)[1], positions.embedding.weight[4:7].detach())
    with pytest.raises(ValueError, match="learned positions cover 512 steps, asked for 513"):
        positions(x, offset=510)


@pytest.mark.parametrize("kernel", ["sdpa", "math", "auto"])
def test_attention_dropout_acts_in_training_only(kernel):
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4, dropout=0.5, kernel=kernel).eval()
    x = torch.randn(2, 6, 16)
    torch.testing.assert_close(
        attn(x, causal=True), attn(x, causal=True, reference=True), rtol=1e-5, atol=1e-5
    )
    attn.train()
    assert not torch.allclose(attn(x, causal=True), attn(x, causal=True, reference=True), atol=1e-3)


def test_the_auto_kernel_is_the_explicit_equation_on_the_cpu(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("auto used SDPA on the CPU")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", refuse)
    x = torch.randn(2, 6, 16)
    _mha(kernel="auto")(x, causal=True)
    with pytest.raises(AssertionError, match="auto used SDPA"):
        _mha(kernel="sdpa")(x, causal=True)


def test_the_explicit_kernel_keeps_float64_and_passes_a_float64_gradient_check():
    """The softmax rises to float32 only from half precision: in float64 the explicit kernel
    stays float64, so central differences (h = 1e-6) agree with autograd; a float32 softmax
    would leave errors near 2^-24 / h ~ 1e-1 in the finite differences."""
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, 2, kernel="math").double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    assert attn(x, causal=True).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x: attn(x, causal=True, alibi=True), (x,), eps=1e-6, atol=1e-8)
    q, k, v = (torch.randn(1, 2, 4, 8, dtype=torch.bfloat16) for _ in range(3))
    scores = q @ k.transpose(-2, -1) / 8**0.5  # bf16 scores, their softmax in float32
    assert torch.equal(attention_reference(q, k, v), torch.softmax(scores.float(), -1).to(torch.bfloat16) @ v)

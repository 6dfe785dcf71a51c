"""Pre-norm Transformer blocks against their equations, built from the blocks' own parts, and
against torch.nn's norm-first Transformer layers given the same weights."""

import pytest
import torch
import torch.nn.functional as F

from deepzoo.nn.attention import KVCache
from deepzoo.nn.positions import RotaryEmbedding, alibi_bias
from deepzoo.nn.transformer import MLP, DecoderBlock, EncoderBlock


def _distinct_norms(block) -> None:
    """Give every LayerNorm its own scale and shift, so using one in place of another shows."""
    for k, name in enumerate(("ln1", "ln2", "ln_cross")):
        norm = getattr(block, name, None)
        if norm is not None:
            with torch.no_grad():
                norm.weight.copy_(torch.linspace(0.5, 1.5 + k, norm.weight.numel()))
                norm.bias.copy_(torch.linspace(-0.3 * (k + 1), 0.2, norm.bias.numel()))


def _mlp(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    """W_2 GELU(W_1 x + b_1) + b_2, the exact (erf) GELU."""
    h = x @ mlp.fc.weight.T + mlp.fc.bias
    return (0.5 * h * (1 + torch.erf(h / 2**0.5))) @ mlp.proj.weight.T + mlp.proj.bias


def test_the_mlp_is_four_times_wider_with_an_exact_gelu():
    torch.manual_seed(0)
    block = EncoderBlock(16, 4)
    assert block.mlp.fc.out_features == 64
    x = torch.randn(2, 5, 16) * 3  # large inputs, where the tanh GELU and ReLU differ from erf's
    torch.testing.assert_close(block.mlp(x), _mlp(block.mlp, x))


@pytest.mark.parametrize("alibi", [False, True])
def test_an_encoder_block_is_x_plus_attn_of_ln1_then_plus_mlp_of_ln2(alibi):
    torch.manual_seed(0)
    block = EncoderBlock(16, 4, kernel="math").eval()
    _distinct_norms(block)
    x, padding = torch.randn(2, 5, 16), torch.tensor([[False] * 5, [False, False, False, True, True]])
    h = x + block.attn(block.ln1(x), key_padding_mask=padding, alibi=alibi)
    expected = h + _mlp(block.mlp, block.ln2(h))
    torch.testing.assert_close(block(x, padding, alibi=alibi), expected)


@pytest.mark.parametrize("alibi", [False, True])
def test_a_decoder_block_is_causal_self_attention_then_cross_attention_then_the_mlp(alibi):
    torch.manual_seed(0)
    block = DecoderBlock(16, 4, cross=True, kernel="math").eval()
    _distinct_norms(block)
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    memory_padding = torch.zeros(2, 7, dtype=torch.bool)
    memory_padding[1, 4:] = True
    h = x + block.attn(block.ln1(x), causal=True, alibi=alibi)
    h = h + block.cross(block.ln_cross(h), memory, key_padding_mask=memory_padding)
    expected = h + _mlp(block.mlp, block.ln2(h))
    torch.testing.assert_close(block(x, memory, memory_padding, alibi=alibi), expected)
    # alibi is a bias on the self-attention scores: on, the block differs from off
    other = block(x, memory, memory_padding, alibi=not alibi)
    assert not torch.allclose(other, expected, atol=1e-4)


def _load_attention(reference: torch.nn.MultiheadAttention, ours) -> None:
    """torch's packed in-projection [W_q; W_k; W_v] from our three projections."""
    with torch.no_grad():
        reference.in_proj_weight.copy_(
            torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
        )
        reference.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        reference.out_proj.load_state_dict(ours.out_proj.state_dict())


def _load_feedforward(reference, block) -> None:
    reference.linear1.load_state_dict(block.mlp.fc.state_dict())
    reference.linear2.load_state_dict(block.mlp.proj.state_dict())


def test_an_encoder_block_is_torchs_norm_first_encoder_layer_with_gelu():
    torch.manual_seed(0)
    block = EncoderBlock(16, 4, kernel="math").eval()
    _distinct_norms(block)
    reference = torch.nn.TransformerEncoderLayer(
        16, 4, dim_feedforward=64, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    ).eval()
    _load_attention(reference.self_attn, block.attn)
    _load_feedforward(reference, block)
    reference.norm1.load_state_dict(block.ln1.state_dict())
    reference.norm2.load_state_dict(block.ln2.state_dict())
    x, padding = torch.randn(2, 5, 16), torch.tensor([[False] * 5, [False, False, False, True, True]])
    torch.testing.assert_close(block(x, padding), reference(x, src_key_padding_mask=padding))


def test_a_decoder_block_is_torchs_norm_first_decoder_layer_with_gelu():
    """torch's norm2 is the cross-attention's norm (our ln_cross) and norm3 the MLP's (our ln2)."""
    torch.manual_seed(0)
    block = DecoderBlock(16, 4, cross=True, kernel="math").eval()
    _distinct_norms(block)
    reference = torch.nn.TransformerDecoderLayer(
        16, 4, dim_feedforward=64, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    ).eval()
    _load_attention(reference.self_attn, block.attn)
    _load_attention(reference.multihead_attn, block.cross)
    _load_feedforward(reference, block)
    for theirs, ours in (
        (reference.norm1, block.ln1),
        (reference.norm2, block.ln_cross),
        (reference.norm3, block.ln2),
    ):
        theirs.load_state_dict(ours.state_dict())
    x, memory = torch.randn(2, 6, 16), torch.randn(2, 7, 16)
    memory_padding = torch.zeros(2, 7, dtype=torch.bool)
    memory_padding[1, 4:] = True
    expected = reference(
        x,
        memory,
        tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(6),
        tgt_is_causal=True,
        memory_key_padding_mask=memory_padding,
    )
    torch.testing.assert_close(block(x, memory, memory_padding), expected)


def test_a_decoder_block_step_by_step_with_caches_equals_the_whole_sequence():
    torch.manual_seed(0)
    block = DecoderBlock(16, 4, cross=True, kernel="math").eval()
    rope = RotaryEmbedding(4)
    x, memory = torch.randn(2, 6, 16), torch.randn(2, 7, 16)
    full = block(x, memory, rope=rope)
    caches = {"self": KVCache(), "cross": KVCache(static=True)}
    steps = [block(x[:, t : t + 1], memory, rope=rope, caches=caches) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_alibi_penalizes_distance_on_both_sides_without_a_causal_mask():
    """-s_h |i - j| for keys after the query too (an encoder's bidirectional attention)."""
    bias = alibi_bias(2, 3, 5, offset=1)
    for h, slope in enumerate((2**-4, 2**-8)):
        for i in range(3):
            for j in range(5):
                assert bias[h, i, j].item() == -slope * abs(i + 1 - j)


def test_rope_grows_its_tables_for_positions_past_them():
    small, large = RotaryEmbedding(8, max_len=4), RotaryEmbedding(8, max_len=64)
    q = torch.randn(1, 2, 3, 8)
    torch.testing.assert_close(small(q, offset=10), large(q, offset=10))
    assert F.cosine_similarity(small(q, offset=10).flatten(), q.flatten(), dim=0) < 0.99  # it rotated

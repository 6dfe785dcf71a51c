"""GPT, rotary embeddings, ALiBi and the CLIP loss against Hugging Face transformers, the reference
most users know.

- GPT with learned positions and biases is GPT-2's architecture (pre-norm blocks, tied output
  layer), with the exact GELU (`activation_function="gelu"`; GPT-2's checkpoints use the tanh
  approximation). Given the same weights, the two models give the same logits, the same loss and
  the same greedy continuation (theirs with its own key/value cache), in float64.
- RoPE's two pairings: "halves" is LLaMA's `rotate_half` form, "interleaved" GPT-J's
  `rotate_every_two` (the RoFormer paper's). transformers computes the angles m theta_i in float32
  where ours are float64 rounded once, so the tolerance is float32 rounding of the angle.
- ALiBi: BLOOM's slopes for any head count, and BLOOM's bias j s_h, which differs from ours,
  -|i - j| s_h, by a constant along each causal row: the same attention weights.
- The CLIP loss: CLIPModel's, on its own embeddings and logit scale.
"""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig
from transformers.models.bloom.modeling_bloom import build_alibi_tensor
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_rotate
from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_rotate

from deepzoo.models.gpt import GPT, GPTConfig
from deepzoo.nn.attention import attention_bias
from deepzoo.nn.contrastive import LogitScale, clip_loss
from deepzoo.nn.positions import RotaryEmbedding, alibi_slopes

FLOAT32 = 2.0**-24
"""Relative rounding error of one float32 operation (half an ulp)."""

CONFIG = GPTConfig(vocab_size=13, block_size=24, layers=3, heads=4, dim=32, positions="learned", bias=True)


def _randomize(model: torch.nn.Module) -> None:
    """Every parameter drawn anew (biases and LayerNorms included), so no weight matches by chance."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.ndim == 1 and p.shape[0] % 2 else 0.0))


def gpt2_from(model: GPT) -> GPT2LMHeadModel:
    """transformers' GPT-2 holding our GPT's weights. Its Conv1D layers compute x W + b, so each
    weight is our Linear's transposed; c_attn stacks the query, key and value maps."""
    c = model.config
    config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.dim,
        n_layer=c.layers,
        n_head=c.heads,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    theirs = GPT2LMHeadModel(config).double().eval()
    ours = {k: v.double() for k, v in model.state_dict().items()}
    state = {
        "transformer.wte.weight": ours["embed.weight"],
        "transformer.wpe.weight": ours["positions.embedding.weight"],
        "transformer.ln_f.weight": ours["ln_f.weight"],
        "transformer.ln_f.bias": ours["ln_f.bias"],
        "lm_head.weight": ours["embed.weight"],
    }
    for i in range(c.layers):
        a, h = f"blocks.{i}.", f"transformer.h.{i}."
        for ln_ours, ln_theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            state[h + ln_theirs + ".weight"] = ours[a + ln_ours + ".weight"]
            state[h + ln_theirs + ".bias"] = ours[a + ln_ours + ".bias"]
        qkv = ("q_proj", "k_proj", "v_proj")
        state[h + "attn.c_attn.weight"] = torch.cat([ours[f"{a}attn.{p}.weight"].T for p in qkv], dim=1)
        state[h + "attn.c_attn.bias"] = torch.cat([ours[f"{a}attn.{p}.bias"] for p in qkv])
        for ours_name, theirs_name in (
            ("attn.out_proj", "attn.c_proj"),
            ("mlp.fc", "mlp.c_fc"),
            ("mlp.proj", "mlp.c_proj"),
        ):
            state[h + theirs_name + ".weight"] = ours[a + ours_name + ".weight"].T
            state[h + theirs_name + ".bias"] = ours[a + ours_name + ".bias"]
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and all(".attn.bias" in k or ".masked_bias" in k for k in missing), missing
    return theirs


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    ours = GPT(CONFIG)
    _randomize(ours)
    ours = ours.double().eval()
    return ours, gpt2_from(ours)


def test_gpt_with_learned_positions_is_gpt2_given_the_same_weights(models):
    ours, theirs = models
    tokens = torch.randint(0, CONFIG.vocab_size, (3, CONFIG.block_size))
    with torch.no_grad():
        expected = theirs(tokens).logits
        torch.testing.assert_close(ours(tokens), expected, rtol=1e-10, atol=1e-10)
        batch = {"tokens": tokens}  # ours predicts tokens[:, 1:] from tokens[:, :-1]
        their_loss = theirs(tokens, labels=tokens).loss  # theirs shifts the labels, in float32
        # a float32 mean of log-softmaxes: a few roundings per term, log2(69) more in the sum
        torch.testing.assert_close(ours.loss(batch)["loss"], their_loss.double(), rtol=16 * FLOAT32, atol=0)
    assert expected.std() > 0.1  # the logits are far from zero: the match is not vacuous


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.7, 5)])
def test_sampling_with_our_cache_draws_gpt2s_tokens_from_the_same_random_stream(models, temperature, top_k):
    """Both sample the next token as torch.multinomial(softmax(float32 logits / T) over the top
    k, 1) from torch's global generator, so from the same seed they draw the same tokens, each
    step fed through the models' own key/value caches. (Greedy decoding of a random model mostly
    repeats one token, which would make the comparison weak.)"""
    ours, theirs = models
    prompt = torch.randint(0, CONFIG.vocab_size, (2, 5))
    new = CONFIG.block_size - 5  # the whole block: both models see every position
    torch.manual_seed(1)
    ours_tokens = ours.generate(prompt, new, temperature=temperature, top_k=top_k)
    torch.manual_seed(1)
    their_tokens = theirs.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        use_cache=True,
        pad_token_id=0,
    )
    assert torch.equal(ours_tokens, their_tokens)
    assert min(len(row[5:].unique()) for row in ours_tokens) >= 3  # varied continuations
    torch.manual_seed(1)
    assert torch.equal(
        ours.generate(prompt, new, temperature=0),
        theirs.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        ),
    )


def _angle_tolerance(x: torch.Tensor, positions: int, head_dim: int) -> float:
    """|ours - theirs| per feature <= 2 max|x| (angle error + 2 roundings of cos and sin) + the
    output's 3 roundings: transformers' angle m theta_i is a float32 product of a float32
    frequency, off by up to 3 roundings of the largest angle, positions - 1 (theta_0 = 1)."""
    largest_angle = positions - 1
    return (
        2 * x.abs().max().item() * FLOAT32 * (3 * largest_angle + 2) + 3 * FLOAT32 * 2 * x.abs().max().item()
    )


@pytest.mark.parametrize("offset", [0, 9])
def test_rope_halves_is_llamas_rotate_half(offset):
    d, heads, T, base = 16, 3, 20, 500.0
    q, k = torch.randn(2, heads, T, d), torch.randn(2, heads, T, d)
    config = LlamaConfig(
        hidden_size=d * heads,
        num_attention_heads=heads,
        head_dim=d,
        rope_parameters={"rope_type": "default", "rope_theta": base},
    )
    position_ids = torch.arange(offset, offset + T)[None].expand(2, T)
    cos, sin = LlamaRotaryEmbedding(config)(q, position_ids)  # (B, T, d)
    their_q, their_k = llama_rotate(q, k, cos, sin)  # unsqueezes cos, sin over the heads
    rope = RotaryEmbedding(d, base=base, pairs="halves")
    tolerance = _angle_tolerance(q, offset + T, d)
    torch.testing.assert_close(rope(q, offset), their_q, rtol=0, atol=tolerance)
    torch.testing.assert_close(rope(k, offset), their_k, rtol=0, atol=tolerance)
    assert (rope(q, offset) - q).abs().max() > 0.5  # the rotation moved the features


@pytest.mark.parametrize("offset", [0, 9])
def test_rope_interleaved_is_gptjs_rotate_every_two(offset):
    """GPT-J keeps queries as (B, T, H, d) and its table as [sin(m theta) | cos(m theta)]."""
    d, heads, T = 16, 3, 20
    x = torch.randn(2, T, heads, d)
    table = create_sinusoidal_positions(offset + T, d)  # (positions, d): sin then cos, base 10000
    position_ids = torch.arange(offset, offset + T)[None].expand(2, T)
    sin, cos = table[position_ids].chunk(2, dim=-1)  # (B, T, d / 2) each
    theirs = gptj_rotate(x, sin, cos)
    ours = RotaryEmbedding(d)(x.transpose(1, 2), offset).transpose(1, 2)  # base 10000, interleaved
    torch.testing.assert_close(ours, theirs, rtol=0, atol=_angle_tolerance(x, offset + T, d))
    assert (ours - x).abs().max() > 0.5


@pytest.mark.parametrize("heads", [1, 2, 3, 4, 6, 8, 12, 16, 24])
def test_alibi_slopes_are_blooms(heads):
    """BLOOM's bias at key j is s_h j (an attention mask of ones numbers the keys 0, 1, ...).
    BLOOM raises a float32 base to integer powers up to the head count: up to heads + 1 roundings."""
    S = 7
    bloom = build_alibi_tensor(torch.ones(1, S), heads, torch.float64).view(heads, S)  # (H, S)
    expected = bloom[:, 1]  # key 1: s_h
    torch.testing.assert_close(alibi_slopes(heads).double(), expected, rtol=(heads + 1) * FLOAT32, atol=0)
    torch.testing.assert_close(bloom, expected[:, None] * torch.arange(S).double())


@pytest.mark.parametrize("offset", [0, 5])
def test_causal_alibi_attention_weights_are_blooms(offset):
    """Ours: -s_h |i - j| on keys j <= i; BLOOM: s_h j. On each causal row they differ by s_h i,
    a constant that the softmax removes."""
    heads, T = 6, 8
    S = offset + T
    scores = torch.randn(2, heads, T, S, dtype=torch.float64)
    ours = attention_bias(T, S, causal=True, offset=offset, alibi_heads=heads).double()
    causal = attention_bias(T, S, causal=True, offset=offset).double()  # 0 or -inf: (1, 1, T, S)
    bloom = build_alibi_tensor(torch.ones(2, S), heads, torch.float64).view(2, heads, 1, S)
    expected = torch.softmax(scores + bloom + causal, dim=-1)
    torch.testing.assert_close(torch.softmax(scores + ours, dim=-1), expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(torch.softmax(scores + causal, dim=-1), expected)  # ALiBi matters here


def test_the_clip_loss_is_clipmodels_on_its_own_embeddings():
    """transformers' CLIPModel (tiny towers, float64) returns normalized image and text embeddings
    and its loss (CE over texts per image and over images per text, averaged) at its logit scale
    exp(2.6592), CLIP's log(1 / 0.07) to 4 decimals: our loss of the same embeddings at that
    scale is theirs, and our scale starts at the unrounded value."""
    from transformers import CLIPConfig, CLIPModel

    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=50, max_position_embeddings=12),
        vision_config=dict(tower, image_size=8, patch_size=4, num_channels=1),
        projection_dim=8,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).double().eval()
    pixels = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    tokens = torch.randint(0, 50, (6, 7))
    out = model(input_ids=tokens, pixel_values=pixels, return_loss=True)
    ours = clip_loss(out.image_embeds, out.text_embeds, model.logit_scale.exp())
    torch.testing.assert_close(ours["loss"], out.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        ours["loss_ab"],
        torch.nn.functional.cross_entropy(out.logits_per_image, torch.arange(6)),
        rtol=1e-12,
        atol=0,
    )
    assert LogitScale()().item() == pytest.approx(1 / 0.07, rel=4 * FLOAT32)  # a float32 parameter
    assert model.logit_scale.item() == pytest.approx(LogitScale().log_scale.item(), abs=1e-4)

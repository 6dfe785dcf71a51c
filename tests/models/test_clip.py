"""CLIP on captions and the per-frame motion-music CLIP: tokens, encoders, losses, retrieval."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from deepzoo.models.clip import (
    DIGITS,
    EOT,
    PAD,
    SOT,
    TEST_TEMPLATES,
    TRAIN_TEMPLATES,
    ImageTextCLIP,
    ImageTextConfig,
    MotionMusicCLIP,
    MotionMusicConfig,
    SequenceEncoder,
    tokenize,
)
from deepzoo.nn.contrastive import clip_loss, per_frame_clip_loss

SMALL_TEXT = ImageTextConfig(embed_dim=16, text_width=32, text_layers=1, text_heads=2)
SMALL_DANCE = MotionMusicConfig(width=16, layers=3, embed_dim=8, window=20)


def test_tokens_frame_the_lower_cased_bytes_and_refuse_long_captions():
    tokens = tokenize(["A 7", "é"], context=6)
    assert tokens.tolist() == [
        [SOT, ord("a"), ord(" "), ord("7"), EOT, PAD],
        [SOT, *"é".encode(), EOT, PAD, PAD],
    ]
    with pytest.raises(ValueError, match="more than the context"):
        tokenize(["a handwritten seven"], context=8)
    assert tokenize(["a 7"], context=5).tolist() == [[SOT, ord("a"), ord(" "), ord("7"), EOT]]  # just fits
    with pytest.raises(ValueError, match="needs 5 tokens, more than the context 4"):
        tokenize(["a 7"], context=4)


def test_zero_shot_templates_are_held_out_and_every_caption_fits():
    assert not set(TEST_TEMPLATES) & set(TRAIN_TEMPLATES)
    for template in TRAIN_TEMPLATES + TEST_TEMPLATES:
        tokenize([template.format(word) for word in DIGITS], ImageTextConfig().context)


def test_the_caption_embedding_reads_up_to_its_end_token_only():
    torch.manual_seed(0)
    model = ImageTextCLIP(SMALL_TEXT).eval()
    tokens = tokenize(["a handwritten seven", "a handwritten eight"], SMALL_TEXT.context)
    changed = tokens.clone()
    changed[:, 21:] = torch.randint(0, 256, changed[:, 21:].shape)  # after EOT (position 20)
    with torch.no_grad():
        a, b = model.encode_text(tokens), model.encode_text(changed)
        torch.testing.assert_close(a, b)
        assert (a[0] - a[1]).abs().max() > 1e-3
        torch.testing.assert_close(a.norm(dim=1), torch.ones(2))
        # the feature is the EOT token's own (a constant shift of it would not show: LayerNorm)
        model.text.token.weight[EOT] += torch.randn(SMALL_TEXT.text_width)
        assert (model.encode_text(tokens) - a).abs().max() > 1e-3


def test_the_text_encoder_is_clips_written_out():
    """CLIP's encode_text: token embeddings plus learned positions, the causal blocks, the final
    LayerNorm, the feature at each caption's EOT token, the projection without bias."""
    torch.manual_seed(0)
    encoder = ImageTextCLIP(SMALL_TEXT).text.eval()
    with torch.no_grad():
        encoder.ln.weight.uniform_(0.5, 1.5)  # so that the LayerNorm is not the identity map
        encoder.ln.bias.normal_()
        tokens = tokenize(["a handwritten seven", "the digit 1", "{}"], SMALL_TEXT.context)
        expected = []
        for row in tokens:
            x = encoder.token.weight[row] + encoder.position
            for block in encoder.blocks:
                x = block(x[None])[0]
            end = row.tolist().index(EOT)
            expected.append(encoder.project.weight @ F.layer_norm(
                x[end], (SMALL_TEXT.text_width,), encoder.ln.weight, encoder.ln.bias, encoder.ln.eps
            ))  # fmt: skip
        torch.testing.assert_close(encoder(tokens), torch.stack(expected), rtol=1e-4, atol=1e-5)
    assert encoder.project.bias is None


def test_the_training_loss_is_clip_loss_over_captions_drawn_from_the_training_templates():
    torch.manual_seed(0)
    model = ImageTextCLIP(SMALL_TEXT)
    batch = {"x": torch.rand(12, 1, 28, 28), "y": torch.arange(12) % 10}
    torch.manual_seed(5)
    loss = model.loss(batch)
    torch.manual_seed(5)
    template = torch.randint(len(TRAIN_TEMPLATES), (12,))
    texts = [TRAIN_TEMPLATES[t].format(DIGITS[y]) for t, y in zip(template.tolist(), batch["y"].tolist())]
    expected = clip_loss(
        model.encode_image(batch["x"]),
        model.encode_text(tokenize(texts, SMALL_TEXT.context)),
        model.logit_scale(),
    )
    torch.testing.assert_close(loss["loss"], expected["loss"])
    images = model.encode_image(batch["x"])  # unit vectors: the CNN's output, normalised
    torch.testing.assert_close(images, F.normalize(model.image(batch["x"]), dim=1))
    torch.testing.assert_close(images.norm(dim=1), torch.ones(12))


def test_zero_shot_classes_are_the_normalised_mean_of_template_embeddings():
    torch.manual_seed(0)
    model = ImageTextCLIP(SMALL_TEXT).eval()
    classes = model.class_embeddings(TEST_TEMPLATES[:2])
    per_template = [
        model.encode_text(tokenize([t.format(w) for w in DIGITS], 40)) for t in TEST_TEMPLATES[:2]
    ]
    torch.testing.assert_close(classes, F.normalize((per_template[0] + per_template[1]) / 2, dim=1))
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        images = [model.encode_image(x[i : i + 1])[0] for i in range(5)]
    brute = torch.tensor([max(range(10), key=lambda c: float(image @ classes[c])) for image in images])
    assert torch.equal(model.classify(x, classes), brute)


@pytest.mark.seeds_covered
def test_clip_on_captions_learns_zero_shot_digits_with_unseen_templates():
    """200 CLIP steps (batch 96) on 2,000 MNIST digits: zero-shot accuracy with the held-out
    templates on 1,000 test digits beats 60% for every seed 0-4 (chance is 10%; seeds reach 78-89%)."""
    from deepzoo.data.mnist import load_mnist
    from deepzoo.data.tensors import TensorData
    from deepzoo.models.classifier import CNNConfig
    from deepzoo.recipes.contrastive import zero_shot_accuracy

    config = replace(SMALL_TEXT, image=CNNConfig(channels=(16, 32), feature_dim=64))
    train, test = load_mnist("train"), TensorData(load_mnist("test")[slice(0, 1000)])
    for seed in range(5):
        torch.manual_seed(seed)
        model = ImageTextCLIP(config)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(200):
            loss = model.loss(train[torch.randint(0, 2000, (96,))])["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert zero_shot_accuracy(model.eval(), test, TEST_TEMPLATES) > 0.6, seed


def test_sequence_encoder_frames_read_only_their_receptive_field():
    """Frame t's output depends on input frames t - r .. t + r, r = 2^layers - 1, and no others."""
    torch.manual_seed(0)
    encoder = SequenceEncoder(5, 8, layers=3)  # r = 7
    x = torch.randn(1, 40, 5, requires_grad=True)
    (encoder(x)[0, 20] * torch.randn(8)).sum().backward()  # (a plain sum of a normed frame is 0)
    reads = x.grad[0].abs().sum(1) > 0
    assert reads.nonzero().view(-1).tolist() == list(range(13, 28))


def test_the_dance_loss_is_the_per_frame_loss_of_one_window_per_sequence():
    torch.manual_seed(0)
    model = MotionMusicCLIP(SMALL_DANCE)
    batch = {"motion": torch.randn(3, 50, 75), "music": torch.randn(3, 50, 438)}
    torch.manual_seed(7)
    loss = model.loss(batch)
    torch.manual_seed(7)
    start = torch.randint(50 - 20 + 1, (3, 1)).view(-1).tolist()
    motion = torch.stack([batch["motion"][i, s : s + 20] for i, s in enumerate(start)])
    music = torch.stack([batch["music"][i, s : s + 20] for i, s in enumerate(start)])
    expected = per_frame_clip_loss(
        model.encode_motion(motion), model.encode_music(music), model.logit_scale()
    )
    torch.testing.assert_close(loss["loss"], expected["loss"])
    with pytest.raises(ValueError, match="sequences of 19 frames are shorter than the window 20"):
        model.loss({"motion": torch.randn(1, 19, 75), "music": torch.randn(1, 19, 438)})
    assert model.loss({"motion": torch.randn(1, 20, 75), "music": torch.randn(1, 20, 438)})["loss"].isfinite()


def test_statistics_standardise_the_training_features_and_similarity_is_the_mean_frame_cosine():
    torch.manual_seed(0)
    model = MotionMusicCLIP(SMALL_DANCE)
    motion, music = 3 + 2 * torch.randn(4, 30, 75), torch.randn(4, 30, 438) * torch.linspace(0, 5, 438)
    music[..., 0] = 1.0  # a constant feature stays finite
    model.fit_statistics(motion, music)
    standard = (motion - model.motion_mean) / model.motion_std
    torch.testing.assert_close(standard.flatten(0, 1).mean(0), torch.zeros(75), atol=1e-5, rtol=0)
    torch.testing.assert_close(standard.flatten(0, 1).std(0), torch.ones(75), atol=1e-5, rtol=0)
    assert torch.isfinite((music - model.music_mean) / model.music_std).all()
    similarity = model.segment_similarity(music, motion)
    a, b = model.encode_music(music), model.encode_motion(motion)
    brute = torch.tensor(
        [[F.cosine_similarity(a[i], b[j], dim=-1).mean().item() for j in range(4)] for i in range(4)]
    )
    torch.testing.assert_close(similarity, brute, atol=1e-6, rtol=0)


def test_both_encoders_standardize_with_the_fitted_statistics():
    """With mean m and std s fitted, encoding m + s x equals encoding x with the identity
    statistics (the same weights): (input - m) / s for motion and for music."""
    torch.manual_seed(0)
    fitted = MotionMusicCLIP(SMALL_DANCE).eval()
    plain = MotionMusicCLIP(SMALL_DANCE).eval()
    plain.load_state_dict(fitted.state_dict())
    for name, dim in (("motion", 75), ("music", 438)):
        mean, std = torch.randn(dim), torch.rand(dim) + 0.5
        getattr(fitted, f"{name}_mean").copy_(mean)
        getattr(fitted, f"{name}_std").copy_(std)
        x = torch.randn(2, 24, dim)
        encode = f"encode_{name}"
        with torch.no_grad():
            torch.testing.assert_close(getattr(fitted, encode)(mean + std * x), getattr(plain, encode)(x))


@pytest.mark.parametrize("both_directions", [True, False])
def test_the_dance_loss_trains_the_directions_it_is_configured_for(both_directions):
    """A window of 20 frames from 30 (start drawn from torch's generator); the loss is
    per_frame_clip_loss of the two encodings, one direction or both."""
    torch.manual_seed(0)
    model = MotionMusicCLIP(replace(SMALL_DANCE, both_directions=both_directions)).eval()
    motion, music = torch.randn(3, 30, 75), torch.randn(3, 30, 438)
    torch.manual_seed(1)
    got = model.loss({"motion": motion, "music": music})["loss"]
    torch.manual_seed(1)
    start = torch.randint(30 - 20 + 1, (3, 1))
    index = start + torch.arange(20)
    window = lambda x: torch.stack([x[b, index[b]] for b in range(3)])  # noqa: E731
    with torch.no_grad():
        a, b = model.encode_motion(window(motion)), model.encode_music(window(music))
        expected = per_frame_clip_loss(a, b, model.logit_scale(), both_directions)["loss"]
        one_way = per_frame_clip_loss(a, b, model.logit_scale(), False)["loss"]
    torch.testing.assert_close(got.detach(), expected)
    assert (got.detach() - one_way).abs() > 1e-4 if both_directions else torch.equal(got.detach(), one_way)


def test_the_sequence_encoder_is_its_docstring_written_out():
    """(B, S, C) -> lift (a 1x1 conv), blocks x + Conv1x1(GELU(Conv3_dil(GELU(norm(x))))) dilated
    1, 2, 4 with zero-padded ends, a final per-frame LayerNorm over channels (no affine)."""
    torch.manual_seed(0)
    encoder = SequenceEncoder(5, 8, layers=3)
    x = torch.randn(2, 30, 5)

    def norm(h):  # (B, C, S): each frame's channels to mean 0, variance 1
        mean, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
        return (h - mean) / (var + 1e-5).sqrt()

    h = F.conv1d(x.mT, encoder.lift.weight, encoder.lift.bias)
    for i, block in enumerate(encoder.blocks):
        inner = F.conv1d(F.gelu(norm(h)), block.conv.weight, block.conv.bias, padding=2**i, dilation=2**i)
        h = h + F.conv1d(F.gelu(inner), block.mix.weight, block.mix.bias)
    torch.testing.assert_close(encoder(x), norm(h).mT, rtol=1e-4, atol=1e-5)


def test_both_models_start_at_clips_temperature_0_07():
    """Radford et al. (2021): the learned temperature starts at 0.07 (logit scale 1/0.07 = 14.3),
    its scale clipped at 100."""
    models = [ImageTextCLIP(SMALL_TEXT), MotionMusicCLIP(MotionMusicConfig(width=8, layers=1, embed_dim=8))]
    for model in models:
        assert model.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
        assert model.logit_scale.max_log_scale == pytest.approx(math.log(100))

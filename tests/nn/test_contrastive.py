"""CLIP losses against their formulas, the notes' own per-frame code, the temperature clamp, and
two gloo processes with gathered negatives against one process on the global batch."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.nn.contrastive import LogitScale, clip_loss, gather_batch, per_frame_clip_loss
from tests.torchrun import torchrun


def _unit(*shape, dtype=torch.float64):
    return F.normalize(torch.randn(*shape, dtype=dtype), dim=-1)


def test_clip_loss_is_the_symmetric_cross_entropy_of_its_formula():
    torch.manual_seed(0)
    a, b, s = _unit(6, 5), _unit(6, 5), torch.tensor(7.0, dtype=torch.float64)
    out = clip_loss(a, b, s)
    # -1/B sum_i log softmax_j(s a_i . b_j) at j = i, then the same over columns
    rows = [-(s * a[i] @ b[i] - torch.logsumexp(s * b @ a[i], 0)) for i in range(6)]
    cols = [-(s * b[j] @ a[j] - torch.logsumexp(s * a @ b[j], 0)) for j in range(6)]
    assert out["loss_ab"].item() == pytest.approx(torch.stack(rows).mean().item(), abs=1e-12)
    assert out["loss_ba"].item() == pytest.approx(torch.stack(cols).mean().item(), abs=1e-12)
    assert out["loss"].item() == pytest.approx((out["loss_ab"] + out["loss_ba"]).item() / 2, abs=1e-12)
    swapped = clip_loss(b, a, s)
    assert swapped["loss"].item() == pytest.approx(out["loss"].item(), abs=1e-12)
    assert swapped["loss_ab"].item() == pytest.approx(out["loss_ba"].item(), abs=1e-12)


def test_clip_loss_is_low_for_matched_pairs_and_log_b_for_random_ones():
    torch.manual_seed(0)
    a = _unit(32, 16)
    matched = clip_loss(a, a, torch.tensor(100.0, dtype=torch.float64))
    assert matched["loss"] < 1e-3 and matched["accuracy_ab"] == 1
    blind = clip_loss(a, _unit(32, 16), torch.tensor(1e-9, dtype=torch.float64))  # s -> 0: uniform
    assert blind["loss"].item() == pytest.approx(math.log(32), abs=1e-6)


def _notes_per_frame(motion_features, music_features, temperature):
    """The notes' Clip.forward after the encoders, verbatim in its math."""
    b, s, _ = motion_features.shape
    criterion = nn.CrossEntropyLoss()
    logits = torch.bmm(motion_features, music_features.mT) * temperature
    labels = torch.arange(s).repeat(b, 1)
    loss_motion = criterion(logits, labels)
    loss_music = criterion(logits.mT, labels)
    return (loss_motion + loss_music) / 2, loss_motion, loss_music


def test_per_frame_loss_equals_the_notes_code():
    torch.manual_seed(0)
    motion, music, s = _unit(3, 9, 4), _unit(3, 9, 4), torch.tensor(5.0, dtype=torch.float64)
    out = per_frame_clip_loss(motion, music, s)
    loss, loss_motion, loss_music = _notes_per_frame(motion, music, s)
    assert out["loss"].item() == pytest.approx(loss.item(), abs=1e-12)
    # CrossEntropyLoss takes dim 1 as the classes: the notes' loss_motion is softmax over motion frames
    assert out["loss_ba"].item() == pytest.approx(loss_motion.item(), abs=1e-12)
    assert out["loss_ab"].item() == pytest.approx(loss_music.item(), abs=1e-12)
    one_way = per_frame_clip_loss(motion, music, s, both_directions=False)
    assert one_way["loss"].item() == pytest.approx(loss_music.item(), abs=1e-12)


def test_per_frame_negatives_stay_inside_their_sequence():
    """Changing another sequence changes nothing; changing a frame of this one does."""
    torch.manual_seed(0)
    a, b, s = _unit(2, 5, 4), _unit(2, 5, 4), torch.tensor(3.0, dtype=torch.float64)
    a.requires_grad_(True)
    per_frame_clip_loss(a, b, s)["loss"].backward()
    b_other = b.clone()
    b_other[1] = _unit(5, 4)
    a2 = a.detach().clone().requires_grad_(True)
    per_frame_clip_loss(a2, b_other, s)["loss"].backward()
    assert torch.equal(a.grad[0], a2.grad[0]) and not torch.allclose(a.grad[1], a2.grad[1])


def test_logit_scale_starts_at_one_over_007_and_is_clamped_at_100():
    scale = LogitScale()
    assert scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    s = scale()
    assert s.item() == pytest.approx(100.0, rel=1e-6)
    s.backward()
    assert scale.log_scale.grad.item() == 0  # beyond the clamp nothing pushes it further
    with pytest.raises(ValueError, match="init_temperature"):
        LogitScale(init_temperature=0.001)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="clip_loss"):
        clip_loss(torch.zeros(4, 3), torch.zeros(5, 3), torch.tensor(1.0))
    with pytest.raises(ValueError, match="per_frame_clip_loss"):
        per_frame_clip_loss(torch.zeros(2, 4, 3), torch.zeros(2, 5, 3), torch.tensor(1.0))


def _features(model, x):
    a, b = model(x).chunk(2, dim=1)
    return F.normalize(a, dim=1), F.normalize(b, dim=1)


def _ddp_rank(rank, world, init_file, results):
    import torch.distributed as dist

    from deepzoo.train.distributed import teardown

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # with the suite's seed offset, as in the test (the script imports conftest)
        model, x = nn.Linear(6, 8).double(), torch.randn(8, 6, dtype=torch.float64)
        shard = x.chunk(world)[rank]
        gathered, offset = gather_batch(shard)
        assert torch.equal(gathered, x) and offset == rank * len(shard)
        out = clip_loss(*_features(model, shard), torch.tensor(4.0, dtype=torch.float64))
        out["loss"].backward()
        for p in model.parameters():  # what train.step does: average the ranks' gradients
            dist.all_reduce(p.grad)
            p.grad /= world
        loss = out["loss"].detach().clone()
        dist.all_reduce(loss)
        torch.save({"loss": loss / world, "grads": [p.grad for p in model.parameters()]}, f"{results}.{rank}")
    finally:
        teardown()  # barrier, then destroy: no rank leaves while a peer's collective is in flight


RANK_SCRIPT = """
import os, sys
import tests.conftest  # the suite's seed offset, as in the test process
from tests.nn.test_contrastive import _ddp_rank

_ddp_rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), sys.argv[1], sys.argv[2])
"""


def test_two_gloo_ranks_with_gathered_negatives_equal_one_process_on_the_global_batch(tmp_path):
    script, init = tmp_path / "rank.py", tmp_path / "init"
    script.write_text(RANK_SCRIPT)
    forget = lambda: init.unlink(missing_ok=True)  # noqa: E731 (a fresh rendezvous file)
    torchrun(2, [str(script), str(init), str(tmp_path / "out")], before_retry=forget)
    torch.manual_seed(0)
    model, x = nn.Linear(6, 8).double(), torch.randn(8, 6, dtype=torch.float64)
    out = clip_loss(*_features(model, x), torch.tensor(4.0, dtype=torch.float64))
    out["loss"].backward()
    for rank in range(2):
        got = torch.load(tmp_path / f"out.{rank}", weights_only=True)
        assert got["loss"].item() == pytest.approx(out["loss"].item(), abs=1e-12)
        for g, p in zip(got["grads"], model.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, rtol=0, atol=1e-12)
    # The tolerance tells gathered negatives from local ones: each half alone gives another loss.
    local = [
        clip_loss(*_features(model, h), torch.tensor(4.0, dtype=torch.float64))["loss"] for h in x.chunk(2)
    ]
    assert abs(sum(local).item() / 2 - out["loss"].item()) > 1e-3


def test_per_frame_accuracy_is_the_share_of_a_frames_whose_best_b_frame_is_their_own():
    """a_i = e_i; b_0 = e_0 and b_j = e_j + 1.1 e_0: frame 0 of a prefers b_1 (1.1 > 1), the
    others find their own (a -> b: 3 of 4), while b_1..b_3 all prefer a_0 (b -> a would be 1 of 4)."""
    a = torch.eye(4).expand(2, 4, 4)
    b = torch.eye(4) + 1.1 * torch.nn.functional.one_hot(torch.zeros(4, dtype=torch.long), 4)
    b[0, 0] = 1.0
    out = per_frame_clip_loss(a, b.expand(2, 4, 4), torch.tensor(1.0))
    assert out["accuracy_ab"].item() == pytest.approx(0.75)

"""Recipes of the music-to-dance family (Bailando) on the synthetic music-dance set of the CLIP
issue (data/synthetic_dance.py): `dance-vqvae`, the choreographic memory, `dance-gpt`, the
music-conditioned GPT over its codes (`--vqvae-run RUN`), and `dance-ac`, the actor-critic
fine-tuning of that GPT with the Beat Align Score as reward (`--gpt-run RUN`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from deepzoo.config import Count
from deepzoo.data.skeleton import forward_kinematics
from deepzoo.data.tensors import TensorData
from deepzoo.metrics.dance import (
    diversity,
    feature_fid,
    geometric_features,
    kinetic_features,
    relative_to_start,
)
from deepzoo.metrics.retrieval import dance_beat_align_score
from deepzoo.models.dance import DanceGPT, DanceGPTConfig, MotionVQVAE, MotionVQVAEConfig
from deepzoo.nn.quantize import perplexity
from deepzoo.recipes.common import adamw_linear, mean_terms, sequence_ac_train, write_dances
from deepzoo.recipes.contrastive import DanceData, dance_splits
from deepzoo.recipes.registry import Recipe, register
from deepzoo.recipes.runs import load_parent
from deepzoo.rl.rewards import BeatAlignReward
from deepzoo.rl.sequence import SequenceACConfig, SequenceActorCritic
from deepzoo.train.config import TrainConfig


@dataclass(frozen=True)
class DanceVQVAERun:
    model: MotionVQVAEConfig = MotionVQVAEConfig()
    data: DanceData = DanceData()
    train: TrainConfig = TrainConfig()


def dance_quality(motion: torch.Tensor, reference: torch.Tensor, beats: torch.Tensor) -> dict[str, float]:
    """Of dances (N, T, 75) against ground-truth dances (M, T', 75) with the music beats (N, T)
    (bool frames) of the dances' songs: FID_k and FID_g (kinetic and geometric features of the
    positions relative to the first frame's root), the diversity of each feature set (standardized
    by the ground truth's statistics, as Bailando reports it) and the mean Beat Align Score."""
    joints = [relative_to_start(j) for j in forward_kinematics(motion.float().cpu())]
    truth = [relative_to_start(j) for j in forward_kinematics(reference.float().cpu())]
    out = {}
    for name, features in (("k", kinetic_features), ("g", geometric_features)):
        ours, theirs = torch.stack([features(j) for j in joints]), torch.stack([features(j) for j in truth])
        out[f"fid_{name}"] = feature_fid(ours, theirs)
        out[f"diversity_{name}"] = diversity(ours, theirs)
    bas = [dance_beat_align_score(j, b) for j, b in zip(joints, beats)]
    return out | {"bas": sum(bas) / len(bas)}


def _fit_normalization(model: MotionVQVAE, data: TensorData) -> None:
    model.fit_normalization(data.tensors["motion"])


def _evaluate_dance_vqvae(
    model: MotionVQVAE, data: TensorData, run_dir: Path, config: DanceVQVAERun
) -> dict[str, float]:
    """Over the test songs: mean absolute error of the reconstructed motion values, mean
    per-joint position error (metres, forward kinematics), code perplexity and usage (mean over
    the body parts), FID_k and FID_g of the reconstructions against the test dances, and the Beat
    Align Score of the reconstructions and of the ground truth."""
    motion = data.tensors["motion"]
    codes = torch.cat([model.encode(b["motion"]) for b in data.batches(50)])
    recon = torch.cat([model.decode(c) for c in codes.split(50)])
    joints_error = (forward_kinematics(recon.cpu()) - forward_kinematics(motion.float().cpu())).norm(dim=-1)
    k = model.num_codes
    per_part = [codes[:, i].flatten() for i in range(model.parts)]
    beats = data.tensors["beats"]
    quality = dance_quality(recon, motion, beats)
    truth = dance_quality(motion, motion, beats)
    return {
        "mae": (recon - motion).abs().mean().item(),
        "mpjpe": joints_error.mean().item(),
        "perplexity": sum(perplexity(c, k).item() for c in per_part) / model.parts,
        "usage": sum((torch.bincount(c, minlength=k) > 0).float().mean().item() for c in per_part)
        / model.parts,
        "fid_k": quality["fid_k"],
        "fid_g": quality["fid_g"],
        "bas": quality["bas"],
        "bas_ground_truth": truth["bas"],
    }


register(
    Recipe(
        name="dance-vqvae",
        summary="Bailando's choreographic memory: 1-D conv VQ-VAE over 75-d poses, upper and lower "
        "body quantized separately, one code per 8 frames",
        default=DanceVQVAERun(train=adamw_linear(3000, 32, 1e-3, 100, 500, max_seconds=300.0)),
        build=lambda c: MotionVQVAE(c.model),
        data=dance_splits,
        prepare=_fit_normalization,
        evaluate=_evaluate_dance_vqvae,
        metric="mpjpe",
        reference="Li et al. (2022): reconstructions of held-out dances (joint error, FID_k, BAS)",
    )
)


@dataclass(frozen=True)
class DanceGPTRun:
    vqvae_run: str = ""
    """The `dance-vqvae` run whose (frozen) VQ-VAE gives the codes; required."""
    model: DanceGPTConfig = DanceGPTConfig()
    data: DanceData = DanceData(train_songs=640)
    """640 training songs: on the VQ-VAE's 160 the GPT overfits after 500 steps (its test loss
    rises from there while the training loss falls); on 640 the test loss still falls at the end."""
    train: TrainConfig = TrainConfig()


def _build_dance_gpt(config: DanceGPTRun) -> DanceGPT:
    parent = load_parent(config.vqvae_run, ("dance-vqvae",), "vqvae-run")
    return DanceGPT(config.model, copy.deepcopy(parent.model).cpu())


def _fit_music(model: DanceGPT, data: TensorData) -> None:
    model.fit_normalization(data.tensors["music"])


def dances_for_music(model: DanceGPT, data: TensorData, run_dir: Path) -> dict[str, float]:
    """Test nats per code over whole test songs; then one dance generated for each test song's
    music (seeded): FID_k, FID_g, diversity and Beat Align Score against the test dances, and the
    ground truth's own diversity and Beat Align Score for reference; the first four dances as
    run_dir/samples/dances.npy and dances.gif (stick figures, red near the beats)."""
    metrics = {"val_loss": mean_terms(model, data, batch_size=50)["loss"]}
    generator = torch.Generator(data.tensors["music"].device).manual_seed(0)
    dances = torch.cat([model.generate(b["music"], generator) for b in data.batches(50)])
    motion, beats = data.tensors["motion"], data.tensors["beats"]
    write_dances(dances[:4], beats[:4, : dances.shape[1]], run_dir / "samples" / "dances")
    truth = dance_quality(motion, motion, beats)
    return (
        metrics
        | dance_quality(dances, motion, beats[:, : dances.shape[1]])
        | {
            "bas_ground_truth": truth["bas"],
            "diversity_k_ground_truth": truth["diversity_k"],
        }
    )


def _evaluate_dance_gpt(
    model: DanceGPT, data: TensorData, run_dir: Path, config: DanceGPTRun
) -> dict[str, float]:
    return dances_for_music(model, data, run_dir)


register(
    Recipe(
        name="dance-gpt",
        summary="music-conditioned GPT over a dance-vqvae run's codes (--vqvae-run RUN): upper and lower "
        "body codes in turn, music features of each code step added to its embedding",
        default=DanceGPTRun(
            train=adamw_linear(3000, 32, 1e-3, 100, 500, max_seconds=300.0, keep_best="val_loss:min")
        ),
        build=_build_dance_gpt,
        data=dance_splits,
        prepare=_fit_music,
        evaluate=_evaluate_dance_gpt,
        samples="dance",
        metric="fid_k",
        reference="Li et al. (2022), stage 2: FID_k, FID_g, diversity and BAS of dances for held-out music",
    )
)


@dataclass(frozen=True)
class DanceACRun:
    gpt_run: str = ""
    """The `dance-gpt` run whose GPT is the starting policy (its VQ-VAE decodes); required."""
    model: SequenceACConfig = SequenceACConfig(kl_coef=0.05)
    window_steps: Count = 30
    """Code steps of each rollout (30 = 240 frames = 4 s): a window of each training song's music."""
    data: DanceData = DanceData(train_songs=640)
    """The GPT's training songs: their music windows are the rollouts' contexts."""
    train: TrainConfig = TrainConfig()


def _build_dance_ac(config: DanceACRun) -> SequenceActorCritic:
    """The GPT (a copy) as the policy; contexts: one random window of `window_steps` code steps
    of each song of the batch (one offset for the batch), its music and its beats; reward: the
    Beat Align Score of the decoded dance against those beats."""
    parent = load_parent(config.gpt_run, ("dance-gpt",), "gpt-run")
    policy = copy.deepcopy(parent.model).cpu()
    if config.window_steps * policy.parts > policy.gpt.config.block_size:
        raise ValueError(
            f"--window-steps {config.window_steps}: {policy.parts} codes a step exceed the GPT's "
            f"context of {policy.gpt.config.block_size} tokens"
        )
    frames = config.window_steps * policy.vqvae.frames_per_code

    def contexts(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        music, beats = batch["music"], batch["beats"]
        if music.shape[1] < frames:
            raise ValueError(f"songs of {music.shape[1]} frames are shorter than a window of {frames}")
        f = policy.vqvae.frames_per_code
        first = int(torch.randint(music.shape[1] // f - config.window_steps + 1, ())) * f
        window = slice(first, first + frames)
        return {"music": music[:, window].to(device), "beats": beats[:, window].to(device)}

    reward = BeatAlignReward(copy.deepcopy(policy.vqvae))
    return SequenceActorCritic(policy, reward, contexts, config.model)


def _evaluate_dance_ac(
    model: SequenceActorCritic, data: TensorData, run_dir: Path, config: DanceACRun
) -> dict[str, float]:
    """The policy's dances for the whole test songs (as `dance-gpt` evaluates), and, on one window
    of each test song, the mean reward (BAS of the window) and the sequence KL to the starting GPT."""
    torch.manual_seed(0)
    sums = {"reward": 0.0, "kl": 0.0}
    with torch.no_grad():
        for batch in data.batches(50):
            terms = model.terms(*model.rollout(batch))
            for k in sums:
                sums[k] += terms[k].item() * len(batch["music"])
    return dances_for_music(model.policy, data, run_dir) | {k: v / len(data) for k, v in sums.items()}


register(
    Recipe(
        name="dance-ac",
        summary="actor-critic fine-tuning of a dance-gpt run (--gpt-run RUN): reward = Beat Align Score "
        "of the decoded dance, KL penalty to the starting GPT",
        default=DanceACRun(train=sequence_ac_train(300, 64, 1e-4, 50, max_seconds=300.0)),
        build=_build_dance_ac,
        data=dance_splits,
        evaluate=_evaluate_dance_ac,
        samples="dance",
        metric="bas",
        reference="Li et al. (2022), stage 3: actor-critic raises the Beat Align Score of the GPT's dances",
    )
)

"""Pictures: image grids, boxes drawn on images, loss curves and confusion matrices, written as
PNG atomically."""

from __future__ import annotations

import io
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from deepzoo.files import write_bytes


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Margins of a grid of panels, in inches: room for the y tick labels (left), the x tick labels and
# label (bottom, and between rows with the next row's title), the title (top).
_LEFT, _RIGHT, _BOTTOM, _TOP, _BETWEEN_COLUMNS, _BETWEEN_ROWS = 0.85, 0.15, 0.55, 0.35, 0.95, 0.9


def _panel_grid(rows: int, cols: int, width: float, height: float):
    """A figure of rows x cols panels, each `width` x `height` inches with its margins, laid out
    by fixed margins: tight_layout measures every label by drawing the figure once more, which
    doubled the time of a figure written at every checkpoint."""
    plt = _figure()
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    W, H = width * cols, height * rows
    panel_w = (W - _LEFT - _RIGHT - (cols - 1) * _BETWEEN_COLUMNS) / cols
    panel_h = (H - _BOTTOM - _TOP - (rows - 1) * _BETWEEN_ROWS) / rows
    fig.subplots_adjust(
        left=_LEFT / W,
        right=1 - _RIGHT / W,
        bottom=_BOTTOM / H,
        top=1 - _TOP / H,
        wspace=_BETWEEN_COLUMNS / panel_w,
        hspace=_BETWEEN_ROWS / panel_h,
    )
    return fig, axes


def _save_figure(fig, path: str | Path) -> None:
    """Write fig as a PNG (its layout already fixed: no tight_layout, see _panel_grid)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    _figure().close(fig)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_bytes(Path(path), buffer.getvalue())


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] tiled into one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) uint8 array."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i, image in enumerate(images.detach().float().clamp(0, 1).cpu()):
        r, col = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = image
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> None:
    """Write images (N, C, H, W) in [0, 1] as one PNG grid (C = 1 gray, C = 3 RGB), each pixel
    v stored as round(255 v): no contrast stretch (a mid-gray image stays mid-gray)."""
    from PIL import Image

    grid = image_grid(images, nrow)
    buffer = io.BytesIO()
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(buffer, format="png")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_bytes(Path(path), buffer.getvalue())


def draw_boxes(
    images: torch.Tensor, boxes: list[torch.Tensor], colours: list[torch.Tensor], scale: int = 3
) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] enlarged `scale` times (nearest), with the outline (one
    output pixel wide) of each box of image i (boxes[i] (D, 4), x1 y1 x2 y2 in input pixels)
    drawn in its colour (colours[i] (D, 3)). Returns (N, 3, scale H, scale W)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images (N, 3, H, W), got {tuple(images.shape)}")
    out = images.detach().float().cpu().repeat_interleave(scale, 2).repeat_interleave(scale, 3).clone()
    H, W = out.shape[-2:]
    for image, image_boxes, image_colours in zip(out, boxes, colours):
        for box, colour in zip(image_boxes.detach().cpu().tolist(), image_colours.cpu()):
            x1, y1, x2, y2 = (round(v * scale) for v in box)
            x1, x2 = min(max(x1, 0), W - 1), min(max(x2 - 1, 0), W - 1)
            y1, y2 = min(max(y1, 0), H - 1), min(max(y2 - 1, 0), H - 1)
            c = colour[:, None]
            image[:, y1, x1 : x2 + 1] = image[:, y2, x1 : x2 + 1] = c
            image[:, y1 : y2 + 1, x1] = image[:, y1 : y2 + 1, x2] = c
    return out


def class_colours(num_classes: int) -> torch.Tensor:
    """(K, 3) colours in [0, 1] of classes 0..K-1: black for class 0 (background), then
    matplotlib's tab10 (class k in tab10's colour k - 1, cycling after 10)."""
    from matplotlib import colormaps

    tab10 = colormaps["tab10"]
    return torch.tensor([(0.0, 0.0, 0.0)] + [tab10((k - 1) % 10)[:3] for k in range(1, num_classes)])


def plot_timeline(
    truth: torch.Tensor, probabilities: torch.Tensor, path: str | Path, titles: list[str] | None = None
) -> None:
    """Online predictions against the ground truth, one pair of panels per stream: a band of the
    true class and one of the predicted class (argmax) per frame, in `class_colours` (background
    black), and each action class's probability (C >= 2) over the frames, in its colour.
    truth (N, T) int classes (-1: not scored, white), probabilities (N, T, C)."""
    _save_figure(timeline_figure(truth, probabilities, titles), path)


def timeline_figure(truth: torch.Tensor, probabilities: torch.Tensor, titles: list[str] | None = None):
    """The figure plot_timeline writes."""
    plt = _figure()
    N, T, C = probabilities.shape
    colours = torch.cat([class_colours(C), torch.ones(1, 3)]).numpy()  # index -1: white
    # fixed margins in inches (see _panel_grid): a stream's band sits 0.1 in above its curves,
    # streams are 0.8 in apart (the x label, then the next title)
    width, height, left, bottom, top, between = 12, 2.6 * N, 0.95, 0.55, 0.35, 0.8
    fig = plt.figure(figsize=(width, height))
    stream_h = (height - bottom - top - (N - 1) * between) / N
    outer = fig.add_gridspec(
        N, 1, left=left / width, right=1 - 0.15 / width, bottom=bottom / height, top=1 - top / height,
        hspace=between / stream_h,
    )  # fmt: skip
    axes = []
    for i in range(N):
        inner = outer[i].subgridspec(2, 1, height_ratios=[1, 2], hspace=0.1 / ((stream_h - 0.1) / 2))
        axes += [fig.add_subplot(inner[0]), fig.add_subplot(inner[1])]
    for i in range(N):
        band, curves = axes[2 * i], axes[2 * i + 1]
        predicted = probabilities[i].argmax(-1)
        band.imshow(
            colours[torch.stack([truth[i], predicted]).cpu().numpy()], aspect="auto", interpolation="nearest"
        )
        band.set_yticks([0, 1], ["truth", "predicted"])
        band.set_xticks([])
        if titles:
            band.set_title(titles[i])
        for c in range(1, C):
            curves.plot(probabilities[i, :, c].cpu().numpy(), color=colours[c], linewidth=1, label=str(c))
        curves.set_xlim(-0.5, T - 0.5)
        curves.set_ylim(0, 1.02)
        curves.set_xlabel("frame")
        curves.set_ylabel("p(class)")
    axes[1].legend(ncol=min(C - 1, 10), fontsize=7, loc="upper right", title="class", title_fontsize=7)
    return fig


_NUMBERED = re.compile(r"(.+?)_(\d+(?:_\d+)*)")


def curve_panels(records: list[dict]) -> dict[str, dict[str, tuple[list, list]]]:
    """The panels of `plot_curves`: panel title -> {line label: (steps, values)}. One panel per
    numeric term of the records (not step, time, lr), a line per split; terms that differ only
    in a numeric suffix (map_00_10, map_10_20, ...) share a panel "map_*", a line per suffix."""
    points: dict[tuple[str, str], list] = defaultdict(list)
    for rec in records:
        for key, value in rec.items():
            if key in ("step", "split", "time", "lr") or not isinstance(value, (int, float)):
                continue
            points[key, rec.get("split", "train")].append((rec["step"], value))
    keys, splits = defaultdict(set), defaultdict(set)  # of each prefix of a numbered term
    for key, split in points:
        if match := _NUMBERED.fullmatch(key):
            keys[match[1]].add(key)
            splits[match[1]].add(split)
    panels: dict[str, dict[str, tuple[list, list]]] = defaultdict(dict)
    for (key, split), series in points.items():  # splits in order of appearance: train first
        match = _NUMBERED.fullmatch(key)
        title, label = key, split
        if match and len(keys[match[1]]) > 1:
            title = f"{match[1]}_*"
            label = match[2] if len(splits[match[1]]) == 1 else f"{split} {match[2]}"
        steps, values = zip(*series)
        panels[title][label] = (list(steps), list(values))
    return dict(sorted(panels.items()))


def plot_curves(records: list[dict], path: str | Path) -> None:
    """Every numeric term of metrics.jsonl records against the step, in the panels of
    `curve_panels`, three a row (nothing is written without a numeric term)."""
    fig = curves_figure(records)
    if fig is not None:
        _save_figure(fig, path)


def curves_figure(records: list[dict]):
    """The matplotlib figure `plot_curves` writes, or None without a numeric term."""
    panels = curve_panels(records)
    if not panels:
        return None
    cols = min(3, len(panels))
    fig, axes = _panel_grid(math.ceil(len(panels) / cols), cols, 4.5, 3.2)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for label, (steps, values) in lines.items():
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=label)
        ax.set_title(title, y=1.0, pad=6)
        ax.set_xlabel("step")
        ax.legend(fontsize=7 if len(lines) > 3 else None)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return fig


def plot_confusion(matrix: torch.Tensor, path: str | Path) -> None:
    """A (K, K) confusion matrix (rows: true class, columns: predicted) as a heat map."""
    _save_figure(confusion_figure(matrix), path)


def confusion_figure(matrix: torch.Tensor):
    """The figure plot_confusion writes: log(1 + count) shaded, each count written in its cell,
    every class named up to 30."""
    counts = matrix.cpu().numpy()
    fig, axes = _panel_grid(1, 1, 5, 4.5)
    ax = axes[0, 0]
    ax.imshow(np.log1p(counts), cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, str(int(value)), ha="center", va="center", fontsize=6)
    if len(counts) <= 30:  # every class named
        ax.set_xticks(range(len(counts)))
        ax.set_yticks(range(len(counts)))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return fig


def plot_lines(
    panels: dict[str, dict[str, tuple[list[float], list[float]]]],
    path: str | Path,
    xlabel: str,
    log_x: bool = False,
    log_y: bool = False,
) -> None:
    """One panel per entry of `panels` (its title -> {line label: (xs, ys)}), side by side; log_x
    puts x on a base-2 log scale, log_y y on a base-10 one."""
    fig, axes = _panel_grid(1, len(panels), 5, 3.6)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for label, (xs, ys) in lines.items():
            ax.plot(xs, ys, marker="o", label=label)
        if log_x:
            ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(title, y=1.0, pad=6)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
    _save_figure(fig, path)


def plot_search(trials: list[dict], axes: dict[str, str], metric: str, path: str | Path) -> None:
    """A random search's trials, best first: for each searched field (axes: flag -> its kind: log,
    uniform, int or choice), the metric of every finished trial against the field's value (x on a
    log scale for a log kind, a choice's values as categories), the best trial in red."""
    fig, grid = _panel_grid(1, len(axes), 4, 3.4)
    done = [t for t in trials if t[metric] is not None]
    for ax, flag in zip(grid.flat, axes):
        categorical = axes[flag] == "choice"
        xs = [t["values"][flag] if categorical else float(t["values"][flag]) for t in done]
        ax.scatter(xs, [t[metric] for t in done], s=18)
        if done and done[0] is trials[0]:
            ax.scatter(xs[:1], [done[0][metric]], s=40, color="red", label="best")
            ax.legend(fontsize=7)
        if axes[flag] == "log":
            ax.set_xscale("log")
        ax.set_xlabel(flag)
        ax.set_ylabel(metric)
    _save_figure(fig, path)


def save_gif(frames: torch.Tensor, path: str | Path, fps: float = 25.0) -> None:
    """Write frames (T, 3, H, W) in [0, 1] as a looping animated GIF (Pillow, which matplotlib
    brings), atomically like every other file."""
    from PIL import Image

    pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    images = [Image.fromarray(p) for p in pixels]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=1000 / fps, loop=0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_bytes(Path(path), buffer.getvalue())


def skeleton_frames(
    joints: torch.Tensor,
    parents: tuple[int, ...],
    size: int = 128,
    beats: torch.Tensor | None = None,
    every: int = 3,
) -> torch.Tensor:
    """Stick-figure frames of joint positions (T, J, 3) (y up), seen from the front (x across,
    y up) at one scale for the whole sequence: (ceil(T / every), 3, size, size) in [0, 1], every
    `every`-th frame (60 FPS motion -> 20 FPS). A drawn frame whose `every` frames hold a music
    beat (beats: (T,) bool) shows the figure in red, the others in white: each beat is seen once."""
    points = joints[::every, :, :2].float().cpu()  # (F, J, 2)
    low, high = points.flatten(0, 1).min(0).values, points.flatten(0, 1).max(0).values
    scale = (size * 0.8) / (high - low).max().clamp(min=1e-6)
    centre = (low + high) / 2
    pixels = (points - centre) * scale * torch.tensor([1.0, -1.0]) + size / 2  # image rows grow down
    t = torch.linspace(0, 1, 24)
    frames = torch.zeros(len(points), 3, size, size)
    on_beat = torch.zeros(len(points), dtype=torch.bool)
    if beats is not None:  # drawn frame f stands for frames f every .. (f + 1) every - 1
        held = torch.zeros(len(points) * every, dtype=torch.bool)
        held[: min(len(beats), len(held))] = beats[: len(held)].bool().cpu()
        on_beat = held.view(len(points), every).any(1)
    bones = [(j, p) for j, p in enumerate(parents) if p >= 0]
    for f in range(len(points)):
        segment = torch.cat([pixels[f, p] + t[:, None] * (pixels[f, j] - pixels[f, p]) for j, p in bones])
        col, row = segment.round().long().clamp(0, size - 1).unbind(1)
        colour = torch.tensor([1.0, 0.2, 0.2]) if on_beat[f] else torch.ones(3)
        frames[f][:, row, col] = colour[:, None]
    return frames

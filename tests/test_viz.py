import numpy as np
import pytest
import torch

from deepzoo.viz import (
    confusion_figure,
    curve_panels,
    curves_figure,
    draw_boxes,
    image_grid,
    plot_confusion,
    plot_curves,
    plot_lines,
    save_image_grid,
    timeline_figure,
)


def test_image_grid_places_image_i_at_row_i_div_cols_and_column_i_mod_cols():
    images = torch.stack([torch.full((1, 3, 4), i / 10) for i in range(5)])
    grid = image_grid(images, nrow=3, pad=1)
    assert grid.shape == (2 * (3 + 1) + 1, 3 * (4 + 1) + 1, 1)
    for i in range(5):
        row, col = divmod(i, 3)
        top, left = 1 + row * 4, 1 + col * 5
        assert (grid[top : top + 3, left : left + 4] == round(i / 10 * 255)).all()
    assert (grid[5:8, 11:15] == 255).all()  # the sixth cell is empty background


def test_image_grid_rejects_non_image_batches():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        image_grid(torch.rand(3, 28, 28))


def test_pictures_are_written_as_png(tmp_path):
    save_image_grid(torch.rand(6, 1, 8, 8), tmp_path / "grid.png")
    plot_curves([{"step": s, "split": "train", "loss": 1 / (s + 1)} for s in range(5)], tmp_path / "c.png")
    plot_confusion(torch.eye(3, dtype=torch.int64) * 5, tmp_path / "m.png")
    lines = {"a": ([1.0, 2.0, 4.0], [2000.0, 100.0, 10.0]), "b": ([1.0, 4.0], [50.0, 20.0])}
    plot_lines({"panel": lines}, tmp_path / "l.png", "seconds", log_x=True, log_y=True)
    for name in ("grid.png", "c.png", "m.png", "l.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert np.asarray(matplotlib.image.imread(tmp_path / "grid.png")).shape[:2] == (2 * 10 + 2, 3 * 10 + 2)


def test_curve_panels_hold_a_line_per_split_and_share_a_panel_across_numeric_suffixes():
    records = [
        {"step": 1, "split": "train", "time": 0.1, "lr": 0.1, "loss": 3.0, "name": "x"},
        {"step": 2, "split": "train", "time": 0.2, "lr": 0.1, "loss": 2.0},
        {"step": 2, "split": "eval", "loss": 2.5, "map_00_10": 0.1, "map_10_20": 0.2, "fid_10": 5.0},
        {"step": 4, "split": "eval", "loss": 1.5, "map_00_10": 0.3, "map_10_20": 0.4, "fid_10": 4.0},
        {"step": 4, "split": "test", "map_00_10": 0.5},
    ]
    panels = curve_panels(records)
    assert list(panels) == ["fid_10", "loss", "map_*"]  # a lone numbered term keeps its name
    assert panels["loss"] == {"train": ([1, 2], [3.0, 2.0]), "eval": ([2, 4], [2.5, 1.5])}
    assert panels["map_*"] == {  # two splits: each line names its split and its suffix
        "eval 00_10": ([2, 4], [0.1, 0.3]),
        "test 00_10": ([4], [0.5]),
        "eval 10_20": ([2, 4], [0.2, 0.4]),
    }
    assert list(curve_panels(records[:4])["map_*"]) == ["00_10", "10_20"]  # one split: the suffix alone
    assert curve_panels([{"step": 1, "split": "train", "lr": 0.1}]) == {} and curves_figure([]) is None
    unsplit = curve_panels([{"step": 1, "tokens": 512}, {"step": 2, "tokens": 1024}])  # an int term, no split
    assert unsplit == {"tokens": {"train": ([1, 2], [512, 1024])}}


def test_the_panels_labels_stay_inside_the_figure_and_off_their_neighbours():
    """Fixed margins replace tight_layout: wide tick labels (-1234.5, step 200000) and a fourth
    row must still fit their panel's room."""
    records = [
        {"step": s, "split": "train", **{f"t{i}": -1234.5 - s / 1e6 * i for i in range(10)}}
        for s in range(0, 200_001, 20_000)
    ]
    _assert_laid_out(curves_figure(records), 10)


def test_a_timeline_keeps_its_labels_and_titles_inside_and_apart():
    """Three streams of 400 frames, four classes: band, curves and titles of each stream apart."""
    generator = torch.Generator().manual_seed(0)
    truth = torch.randint(-1, 4, (3, 400), generator=generator)
    probabilities = torch.rand(3, 400, 4, generator=generator).softmax(-1)
    _assert_laid_out(timeline_figure(truth, probabilities, [f"test stream {i}" for i in range(3)]), 6)


def test_the_confusion_matrix_names_every_class_and_writes_count_ij_in_row_i_column_j():
    """Rows are the true class, columns the predicted one (sklearn's convention); 12 classes with
    five-digit counts fit inside the figure."""
    matrix = torch.arange(144).view(12, 12) * 1000
    fig = confusion_figure(matrix)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in range(12)]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(k) for k in range(12)]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells[(2, 7)] == str(matrix[2, 7].item()) and cells[(7, 2)] == str(matrix[7, 2].item())
    _assert_laid_out(fig, 1)


def _assert_laid_out(fig, panels: int) -> None:
    """Every panel's tight box (labels and title included) inside the figure, off the others."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.axison]
    assert len(boxes) == panels
    width, height = fig.bbox.width, fig.bbox.height
    for i, box in enumerate(boxes):
        assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height, box
        for other in boxes[i + 1 :]:
            assert not box.overlaps(other), (box, other)


def test_draw_boxes_outlines_each_box_in_its_colour_and_leaves_the_rest():
    images = torch.full((2, 3, 8, 10), 0.5)
    boxes = [torch.tensor([[1.0, 2.0, 4.0, 6.0]]), torch.zeros(0, 4)]
    red = torch.tensor([[1.0, 0.0, 0.0]])
    out = draw_boxes(images, boxes, [red, torch.zeros(0, 3)], scale=2)
    assert out.shape == (2, 3, 16, 20)
    outline = torch.zeros(16, 20, dtype=torch.bool)
    outline[4, 2:8] = outline[11, 2:8] = outline[4:12, 2] = outline[4:12, 7] = True  # x 2..7, y 4..11
    assert (out[0][:, outline] == red.T).all()
    assert (out[0][:, ~outline] == 0.5).all() and (out[1] == 0.5).all()


def test_skeleton_frames_draw_every_third_frame_red_on_the_beats():
    from deepzoo.data.skeleton import PARENTS, forward_kinematics
    from deepzoo.viz import skeleton_frames

    motion = torch.zeros(30, 75)
    motion[:, 72] = torch.linspace(0, 0.5, 30)  # walks to the side
    beats = torch.zeros(30, dtype=torch.bool)
    beats[15] = True
    frames = skeleton_frames(forward_kinematics(motion), PARENTS, size=64, beats=beats)
    assert frames.shape == (10, 3, 64, 64) and 0 <= frames.min() and frames.max() <= 1
    red = (frames[:, 0] > 0.9) & (frames[:, 1] < 0.5)  # (F, H, W)
    drawn = frames.sum(1) > 0
    assert drawn.flatten(1).any(1).all()  # every frame shows the figure
    assert red.flatten(1).any(1).tolist() == [f == 5 for f in range(10)]  # frame 5 stands for 15-17
    columns = [torch.nonzero(d.any(0)).float().mean() for d in drawn]
    assert columns[-1] > columns[0]  # the figure moves across the picture
    for beat in range(30):  # each beat once, in the drawn frame that stands for it
        beats = torch.zeros(30, dtype=torch.bool)
        beats[beat] = True
        frames = skeleton_frames(forward_kinematics(motion), PARENTS, size=32, beats=beats, every=4)
        red = ((frames[:, 0] > 0.9) & (frames[:, 1] < 0.5)).flatten(1).any(1)
        assert len(frames) == 8 and red.tolist() == [f == beat // 4 for f in range(8)]


def test_a_saved_grid_keeps_gray_as_gray_rgb_as_its_colours_and_clamps_to_0_1(tmp_path):
    """Pixel v is stored as round(255 v), with no contrast stretch: a mid-gray image stays mid-gray
    (matplotlib's imsave mapped the darkest pixel to black and wrote this one black)."""
    from PIL import Image

    def read(path):
        return np.asarray(Image.open(path).convert("RGB")).astype(np.float64) / 255

    save_image_grid(torch.full((1, 1, 4, 4), 0.5), tmp_path / "mid.png")
    np.testing.assert_allclose(read(tmp_path / "mid.png")[2:6, 2:6], 128 / 255)
    gray = torch.linspace(-0.5, 1.5, 16).view(1, 1, 4, 4)  # outside [0, 1] at both ends
    save_image_grid(gray, tmp_path / "gray.png")
    expected = (gray[0, 0].clamp(0, 1) * 255).round().numpy() / 255
    np.testing.assert_allclose(read(tmp_path / "gray.png")[2:6, 2:6], np.repeat(expected[..., None], 3, -1))
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 1.0]])[:, :, None, None].expand(2, 3, 4, 4)
    save_image_grid(colours, tmp_path / "rgb.png", nrow=2)
    rgb = read(tmp_path / "rgb.png")
    np.testing.assert_allclose(rgb[2, 2], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(rgb[2, 8], [0.0, 153 / 255, 1.0])


def test_a_box_past_the_images_edges_is_outlined_along_them():
    """Each edge clamped into the picture: a box overhanging all four sides outlines the border; a
    box starting past the right edge is drawn on the last column."""
    images = torch.full((1, 3, 8, 10), 0.5)
    red = torch.tensor([[1.0, 0.0, 0.0]])
    out = draw_boxes(images, [torch.tensor([[-2.0, -3.0, 15.0, 12.0]])], [red], scale=2)[0]
    border = torch.zeros(16, 20, dtype=torch.bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    assert (out[:, border] == red.T).all() and (out[:, ~border] == 0.5).all()
    out = draw_boxes(images, [torch.tensor([[12.0, 1.0, 14.0, 3.0]])], [red], scale=2)[0]
    drawn = (out != 0.5).any(0)
    assert drawn[2:6, 19].all() and drawn.sum() == 4


def test_draw_boxes_refuses_images_that_are_not_rgb():
    with pytest.raises(ValueError, match=r"RGB images \(N, 3, H, W\)"):
        draw_boxes(torch.rand(1, 1, 8, 8), [torch.zeros(0, 4)], [torch.zeros(0, 3)])


def test_class_k_has_tab10s_colour_k_minus_1_and_the_background_is_black():
    from matplotlib import colormaps

    from deepzoo.viz import class_colours

    colours = class_colours(13)
    tab10 = colormaps["tab10"]
    assert colours.shape == (13, 3) and colours[0].tolist() == [0.0, 0.0, 0.0]
    for k in (1, 5, 10, 11, 12):
        torch.testing.assert_close(colours[k], torch.tensor(tab10((k - 1) % 10)[:3], dtype=colours.dtype))


def test_a_timelines_bands_are_the_truth_and_the_argmax_in_class_colours_unscored_white():
    from deepzoo.viz import class_colours

    truth = torch.tensor([[0, 1, 2, -1, 0]])
    probabilities = torch.tensor(
        [[[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]]
    )
    fig = timeline_figure(truth, probabilities)
    band = np.asarray(fig.axes[0].images[0].get_array())  # (2, T, 3): truth row, predicted row
    colours = class_colours(3).numpy()
    np.testing.assert_allclose(band[0], np.stack([colours[0], colours[1], colours[2], [1, 1, 1], colours[0]]))
    np.testing.assert_allclose(band[1], colours[[0, 1, 0, 2, 2]])
    curves = fig.axes[1].lines  # one per action class, the background's probability left out
    assert [line.get_label() for line in curves] == ["1", "2"]
    np.testing.assert_allclose(curves[1].get_ydata(), probabilities[0, :, 2].numpy())


def test_curves_of_one_term_fill_one_panel_and_the_confusion_shading_is_row_true_column_predicted():
    fig = curves_figure([{"step": s, "split": "train", "loss": 1.0 / (s + 1)} for s in range(3)])
    assert len(fig.axes) == 1
    four = curves_figure([{"step": s, "a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0} for s in range(3)])
    rows = [round(ax.get_position().y0, 3) for ax in four.axes]  # three a row: 2 x 3, two left blank
    assert len(rows) == 6 and len(set(rows[:3])) == 1 and rows[3] < rows[0]
    assert [ax.axison for ax in four.axes] == [True] * 4 + [False] * 2
    matrix = torch.tensor([[5, 1, 0], [0, 7, 2], [3, 0, 9]])
    shading = np.asarray(confusion_figure(matrix).axes[0].images[0].get_array())
    np.testing.assert_allclose(shading, np.log1p(matrix.numpy()))


def test_a_search_plot_shows_the_finished_trials_and_marks_the_best_only_when_it_finished(
    tmp_path, monkeypatch
):
    from deepzoo import viz

    figures = []
    monkeypatch.setattr(viz, "_save_figure", lambda fig, path: figures.append(fig))
    trials = [
        {"values": {"lr": 0.1, "act": "relu"}, "loss": 0.5},
        {"values": {"lr": 0.01, "act": "gelu"}, "loss": 0.7},
        {"values": {"lr": 0.001, "act": "relu"}, "loss": None},  # still running
    ]
    viz.plot_search(trials, {"lr": "log", "act": "choice"}, "loss", tmp_path / "s.png")
    viz.plot_search([trials[2], *trials[:2]], {"lr": "log"}, "loss", tmp_path / "s.png")
    viz.plot_search(trials, {"lr": "uniform"}, "loss", tmp_path / "s.png")
    first, second, uniform = figures
    assert uniform.axes[0].get_xscale() == "linear"  # only a log-drawn field gets a log axis
    lr, act = first.axes
    assert lr.get_xscale() == "log" and act.get_xscale() == "linear"
    np.testing.assert_allclose(lr.collections[0].get_offsets(), [[0.1, 0.5], [0.01, 0.7]])
    np.testing.assert_allclose(lr.collections[1].get_offsets(), [[0.1, 0.5]])  # the best, in red
    assert len(second.axes[0].collections) == 1  # the first trial has not finished: no best yet


def test_a_gif_loops_forever_at_the_asked_frame_rate(tmp_path):
    from PIL import Image

    from deepzoo.viz import save_gif

    save_gif(torch.rand(4, 3, 8, 8), tmp_path / "a.gif", fps=20)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 4 and gif.info["loop"] == 0 and gif.info["duration"] == 50


def test_a_skeleton_is_drawn_upright_at_one_scale_for_both_axes():
    """A T-shape 4 wide and 1 tall, y up: its bar (y = 1) is drawn above its stem's foot (y = 0),
    and 4 times as wide as tall."""
    from deepzoo.viz import skeleton_frames

    joints = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-2.0, 1.0, 0.0], [2.0, 1.0, 0.0]]])
    frame = skeleton_frames(joints, (-1, 0, 1, 1), size=100, every=1)[0]
    rows, cols = torch.nonzero(frame.sum(0) > 0, as_tuple=True)
    assert (cols.max() - cols.min()).item() == pytest.approx(80, abs=1)  # 0.8 of the side
    assert (rows.max() - rows.min()).item() == pytest.approx(20, abs=1)
    bar_row = rows[cols == cols.min()].float().mean()
    assert bar_row < rows.max() - 15  # the bar is near the top, the foot at the bottom


def test_plot_lines_puts_x_on_a_base_2_log_scale_and_y_on_a_base_10_one(tmp_path, monkeypatch):
    from deepzoo import viz

    figures = []
    monkeypatch.setattr(viz, "_save_figure", lambda fig, path: figures.append(fig))
    lines = {"a": ([1.0, 2.0, 4.0], [2000.0, 100.0, 10.0])}
    viz.plot_lines({"p": lines, "q": lines}, tmp_path / "l.png", "batch", log_x=True, log_y=True)
    viz.plot_lines({"p": lines}, tmp_path / "l.png", "batch")
    (p, q), (plain,) = figures[0].axes, figures[1].axes
    assert p.xaxis.get_transform().base == 2 and p.yaxis.get_transform().base == 10
    assert (p.get_title(), q.get_title(), p.get_xlabel()) == ("p", "q", "batch")
    assert plain.get_xscale() == plain.get_yscale() == "linear"

"""curves.png says what happened: validation metrics on the training steps' axis, a single validation point
visible with its value, a loss that falls by decades on a log scale."""

import csv
import math

from PIL import Image

from docvlm.callbacks import curves_figure, plot_curves


def demo_like(steps: int = 1500) -> dict[str, list[tuple[int, float]]]:
    """The demo's shape: a loss from 2 to 1e-3, a warm-up then cosine rate, one validation at the end."""
    logged = range(24, steps, 25)
    return {
        "train/loss": [(s, 2.0 * math.exp(-s / 150) + 1e-3) for s in logged],
        "lr-AdamW": [(s, 1e-3 * min(1.0, s / 700)) for s in logged],
        "val/cer": [(steps - 1, 0.0)],
        "val/exact_match": [(steps - 1, 1.0)],
    }


def panels(series):
    return {axes.get_title(): axes for axes in curves_figure(series).axes}


def test_validation_shares_the_training_step_axis_and_a_single_point_shows_its_value():
    drawn = panels(demo_like())
    for name in ("val/cer", "val/exact_match", "train/loss"):
        low, high = drawn[name].get_xlim()
        assert low <= 0 and high >= 1499
    exact = drawn["val/exact_match"]
    assert [t.get_text() for t in exact.texts] == ["1.0000"]
    (dot,) = exact.lines
    assert dot.get_marker() == "o" and dot.get_markersize() >= 8
    low, high = exact.get_ylim()
    assert low <= 0 and high > 1  # the value seen against the metric's range, not +-0.04 around it


def test_a_loss_that_falls_by_decades_is_drawn_on_a_log_scale_and_a_flat_one_is_not():
    assert panels(demo_like())["train/loss"].get_yscale() == "log"
    flat = {"train/loss": [(s, 1.0 + 0.01 * (s % 3)) for s in range(0, 100, 10)]}
    assert panels(flat)["train/loss"].get_yscale() == "linear"
    assert panels(demo_like())["lr-AdamW"].get_yscale() == "linear"


def test_plot_curves_reads_lightnings_csv(tmp_path):
    rows = [{"epoch": 0, "step": s, "train/loss": v} for s, v in demo_like()["train/loss"]]
    rows.append({"epoch": 7, "step": 1499, "val/cer": 0.0, "val/samples": 64})
    with (tmp_path / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "step", "train/loss", "val/cer", "val/samples"])
        writer.writeheader()
        writer.writerows(rows)
    assert set(plot_curves(tmp_path / "metrics.csv", tmp_path / "curves.png")) == {"train/loss", "val/cer"}
    assert Image.open(tmp_path / "curves.png").size == (800, 280)

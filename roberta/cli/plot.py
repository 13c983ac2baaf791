"""roberta-plot: PNG figures of training runs and sweeps (needs matplotlib: pip install -e '.[plot]').

`roberta-plot curves RUN [RUN ...]`: train loss and learning rate per update, and each validation
metric per validation, one line per run. A RUN is a `--log-format json` training log (a --log-file
or the captured stderr, of roberta-train or fairseq-train), a `roberta-validate --watch` results.jsonl,
or the save dir that holds it (SAVE_DIR/watch/results.jsonl). Runs given the same --names entry are
drawn as one run: a training log and its save dir's watch results, say.

`roberta-plot sweep DIR`: per task of a roberta-sweep --output-dir, each setting's finished seeds
as points, their mean and the standard error of the mean, drawn beside results.md (DIR/results.png).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from roberta.cli.common import run_cli
from roberta.errors import UserError
from roberta.fileio import atomic_write
from roberta.plot_data import (RunCurves, TaskScores, default_run_names, default_valid_metrics, read_run,
                               read_sweep, sorted_points)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL_HINT = "roberta-plot needs matplotlib: pip install -e '.[plot]'"
DPI = 100
WIDTH = 9.0  # inches: 900 pixels at DPI
PANEL_HEIGHT = 2.4  # inches per row of panels; a single row gets more, as it has the height to itself
SINGLE_ROW_HEIGHT = 3.2
LEGEND_HEIGHT = 0.5
SUBSET_STYLES = ("-", "--", ":", "-.")
# Beside each setting's tick, as a fraction of the gap between two settings: its seeds spread over
# SEED_SPREAD left of it, its mean right of it, so that no seed hides behind the mean.
SEED_SPREAD, SEED_CENTER, MEAN_OFFSET = 0.2, -0.15, 0.12
ERROR_LABEL = "mean ± standard error (std / √seeds)"


def require_matplotlib() -> None:
    """Raise UserError saying how to install matplotlib when it cannot be imported."""
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise UserError(INSTALL_HINT) from None


def _new_figure(panels: int, columns: int, panel_width: float | None = None) -> tuple[Figure, list[Axes]]:
    """A figure with `panels` axes in rows of `columns`, laid out for a legend along the top."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = math.ceil(panels / columns)
    width = WIDTH if panel_width is None else panel_width * columns
    # A Figure with its own Agg canvas, not pyplot: no display, no global figure registry.
    height = SINGLE_ROW_HEIGHT if rows == 1 else PANEL_HEIGHT * rows
    figure = Figure(figsize=(width, height + LEGEND_HEIGHT), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False)
    axes = [axis for row in grid for axis in row]
    for unused in axes[panels:]:
        figure.delaxes(unused)
    return figure, axes[:panels]


def draw_curves(runs: Sequence[tuple[str, RunCurves]], valid_metrics: Sequence[str]) -> Figure:
    """Panels `train loss` and `learning rate` (when some run logged them), then `valid <metric>`
    for each of `valid_metrics`; in each, one line per run (and validation subset), labelled
    with the run's name (`name (subset)` when the runs have several subsets)."""
    panels: list[tuple[str, str, str | None]] = []  # (title, field, validation metric or None)
    for field, title in (("loss", "train loss"), ("lr", "learning rate")):
        if any(run.train.get(field) for _, run in runs):
            panels.append((title, field, None))
    panels += [(f"valid {metric}", metric, metric) for metric in valid_metrics]
    if not panels:
        raise UserError("nothing to draw: the runs have no train loss, no learning rate and no validation metric")
    figure, axes = _new_figure(len(panels), len(panels) if len(panels) <= 3 else 2)
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    for axis, (title, field, metric) in zip(axes, panels):
        axis.set_title(title)
        axis.set_xlabel("update")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(field)
        if metric is None:
            for color, (name, run) in enumerate(runs):
                if run.train.get(field):
                    axis.plot(*sorted_points(run.train[field]), color=f"C{color}", label=name)
        else:
            _draw_validation(axis, runs, metric)
        axis.grid(alpha=0.3)
    handles = [Line2D([], [], color=f"C{color}") for color in range(len(runs))]
    figure.legend(handles, [name for name, _ in runs], loc="outside upper center", ncols=min(len(runs), 6),
                  frameon=False)
    return figure


def _draw_validation(axis: Axes, runs: Sequence[tuple[str, RunCurves]], metric: str) -> None:
    subsets = list(dict.fromkeys(subset for _, run in runs for subset, metrics in run.valid.items()
                                 if metric in metrics))
    for color, (name, run) in enumerate(runs):
        for subset, metrics in run.valid.items():
            if metric in metrics:
                label = name if len(subsets) == 1 else f"{name} ({subset})"
                axis.plot(*sorted_points(metrics[metric]), color=f"C{color}", marker="o", markersize=3,
                          linestyle=SUBSET_STYLES[subsets.index(subset) % len(SUBSET_STYLES)], label=label)
    if len(subsets) > 1:
        axis.legend(fontsize="small")


def draw_sweep(tasks: Sequence[TaskScores]) -> Figure:
    """A panel per task: x is the setting; each finished seed's score is a point (spread sideways
    so equal scores stay visible) and beside them the mean is a diamond whose error bar is the
    standard error of the mean (sample standard deviation, ddof=1, over the square root of the
    number of seeds; none with a single seed)."""
    columns = min(len(tasks), 3)
    figure, axes = _new_figure(len(tasks), columns, panel_width=max(3.0, WIDTH / columns))
    for axis, task in zip(axes, tasks):
        seed_x, seed_y = [], []
        for index, setting in enumerate(task.settings):
            count = len(setting.scores)
            for position, score in enumerate(setting.scores):
                offset = 0.0 if count == 1 else SEED_SPREAD * (position / (count - 1) - 0.5)
                seed_x.append(index + SEED_CENTER + offset)
                seed_y.append(score)
        axis.plot(seed_x, seed_y, linestyle="none", marker="o", markersize=4, color="C0", alpha=0.6,
                  label="each seed")
        errors = [math.nan if setting.standard_error is None else setting.standard_error for setting in task.settings]
        axis.errorbar([index + MEAN_OFFSET for index in range(len(task.settings))], [setting.mean for setting in task.settings], yerr=errors,
                      fmt="D", color="black", markersize=5, capsize=4, label=ERROR_LABEL)
        axis.set_title(task.task)
        axis.set_ylabel(f"{task.metric} ({'higher' if task.maximize else 'lower'} is better)")
        axis.set_xticks(range(len(task.settings)), [setting.setting for setting in task.settings],
                        rotation=20, ha="right", fontsize="small")
        axis.set_xlim(-0.5, len(task.settings) - 0.5)
        axis.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside upper center", ncols=2, frameon=False)
    return figure


def save_png(figure: Figure, path: Path) -> None:
    """Write the figure as a PNG at `path`, atomically."""
    if path.suffix.lower() != ".png":
        raise UserError(f"--out {path}: roberta-plot writes PNG files; give a name ending in .png")
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: the folder {path.parent} does not exist; create it first")
    try:
        with atomic_write(path, "wb") as handle:
            figure.savefig(handle, format="png", dpi=DPI)
    except OSError as error:
        raise UserError(f"--out {path}: cannot write ({error.strerror or error}); pick a writable path") from None


def load_runs(paths: Sequence[Path], names: Sequence[str] | None) -> list[tuple[str, RunCurves]]:
    """Each path's curves under its name; paths sharing a name are merged into one run, in order."""
    if names is not None and len(names) != len(paths):
        raise UserError(f"--names gives {len(names)} names for {len(paths)} runs; give one name per RUN")
    if names is None:
        names = default_run_names(paths)
    runs: dict[str, RunCurves] = {}
    for name, path in zip(names, paths):
        runs.setdefault(name, RunCurves()).merge(read_run(path))
    return list(runs.items())


def _chosen_metrics(runs: Sequence[tuple[str, RunCurves]], requested: Sequence[str] | None) -> list[str]:
    if requested is None:
        return default_valid_metrics(run for _, run in runs)
    available = list(dict.fromkeys(metric for _, run in runs for metric in run.valid_metrics()))
    for metric in requested:
        if metric not in available:
            raise UserError(f"--metric {metric}: no validation record of these runs reports it "
                            f"({'they report ' + ', '.join(available) if available else 'they have no validation'})")
    return list(dict.fromkeys(requested))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roberta-plot", allow_abbrev=False, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    curves = commands.add_parser("curves", allow_abbrev=False, help="training and validation curves of runs")
    curves.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="a --log-format json training log, a watch results.jsonl, or a save dir with "
                             "watch/results.jsonl")
    curves.add_argument("--names", nargs="+", metavar="NAME",
                        help="legend names, one per RUN; RUNs with the same name are drawn as one run "
                             "(default: a log's file name without suffix, a save dir's folder name)")
    curves.add_argument("--metric", nargs="+", metavar="METRIC",
                        help="validation metrics to draw, as logged without the subset prefix (loss, accuracy, "
                             "f1, ...; default: every one but throughput counters, ppl and nll_loss)")
    curves.add_argument("--out", type=Path, default="curves.png", metavar="PNG",
                        help="the figure to write (default: curves.png)")
    sweep = commands.add_parser("sweep", allow_abbrev=False, help="per-task scores of a roberta-sweep")
    sweep.add_argument("output_dir", type=Path, metavar="DIR", help="the roberta-sweep --output-dir")
    sweep.add_argument("--out", type=Path, metavar="PNG", help="the figure to write (default: DIR/results.png)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    require_matplotlib()
    if args.command == "curves":
        runs = load_runs(args.runs, args.names)
        figure = draw_curves(runs, _chosen_metrics(runs, args.metric))
        out = args.out
    else:
        figure = draw_sweep(read_sweep(args.output_dir))
        out = args.out or args.output_dir / "results.png"
    save_png(figure, out)
    print(f"wrote {out}")


def cli_main() -> None:
    run_cli(main, "roberta-plot")


if __name__ == "__main__":
    cli_main()

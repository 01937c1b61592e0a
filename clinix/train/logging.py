"""What a training run leaves to read: ``log.txt``, ``metrics.jsonl``, ``metrics.csv``, ``progress.png``
(reference §5.6), and TensorBoard event files in ``tensorboard/`` when the ``tensorboard`` package is
installed (``pip install clinix[tensorboard]``; nothing needs it).

``metrics.jsonl`` holds one JSON object per completed epoch: ``epoch``, ``train_loss``, ``val_loss``,
``pseudo_dice`` (class name -> value), ``mean`` (their nanmean), ``ema``, ``lr``, ``seconds``; undefined
values are ``null``. It is rewritten from the checkpoint's history when a run resumes, so it never holds
an epoch the checkpoint does not. ``metrics.csv`` holds the same, one row per epoch and a ``dice_<class>``
column per class, empty cells where undefined, rewritten from the history every epoch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from clinix.io.atomic import atomic_path, atomic_write

LOG_FILE = "log.txt"
METRICS_FILE = "metrics.jsonl"
PROGRESS_FILE = "progress.png"
CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
CSV_COLUMNS = ("epoch", "train_loss", "val_loss", "mean", "ema", "lr", "seconds")

EpochRecord = dict[str, Any]


class TrainingLog:
    """The files of one fold's folder; a no-op on ranks other than 0 (``enabled=False``).

    With ``echo`` the epoch summaries and notable lines are printed too, and each epoch shows a progress
    bar with the running loss (rich draws it on a terminal only).
    """

    def __init__(self, folder: Path, enabled: bool = True, echo: bool = True) -> None:
        self.folder = folder
        self.enabled = enabled
        self.console = Console() if enabled and echo else None
        self.events: Any = None  # the TensorBoard writer, made at the first epoch
        if enabled:
            folder.mkdir(parents=True, exist_ok=True)

    def line(self, text: str, echo: bool = False) -> None:
        """Append ``YYYY-MM-DD HH:MM:SS: text`` to log.txt (and print ``text`` when ``echo``)."""
        if not self.enabled:
            return
        with (self.folder / LOG_FILE).open("a") as file:
            file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {text}\n")
        if echo and self.console is not None:
            self.console.print(text, highlight=False, soft_wrap=True)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[float], None]]:
        """A progress bar of ``total`` steps; yields ``advance(loss)``, which also shows the running mean."""
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=self.console is None or not self.console.is_terminal,
        )
        task = bar.add_task(description, total=total, loss=float("nan"))
        seen: list[float] = []

        def advance(loss: float) -> None:
            seen.append(loss)
            bar.update(task, advance=1, loss=sum(seen) / len(seen))

        with bar:
            yield advance

    def restart_metrics(self, history: Sequence[EpochRecord]) -> None:
        """Rewrite metrics.jsonl with exactly ``history`` (empty for a fresh run)."""
        if self.enabled:
            text = "".join(json_line(record) for record in history)
            atomic_write(self.folder / METRICS_FILE, lambda tmp: tmp.write_text(text))

    def record_epoch(self, record: EpochRecord, history: Sequence[EpochRecord]) -> None:
        """Append ``record`` to metrics.jsonl, log it, and redraw progress.png from ``history``."""
        if not self.enabled:
            return
        with (self.folder / METRICS_FILE).open("a") as file:
            file.write(json_line(record))
        atomic_write(self.folder / CSV_FILE, lambda tmp: tmp.write_text(metrics_csv(history), newline=""))
        self.line(epoch_summary(record), echo=True)
        plot_progress(history, self.folder / PROGRESS_FILE)
        self._record_events(record)

    def _record_events(self, record: EpochRecord) -> None:
        if self.events is None:
            self.events = summary_writer(self.folder / TENSORBOARD_DIR) or False
        if not self.events:
            return
        step = record["epoch"]
        scalars = {
            "loss/train": record["train_loss"],
            "loss/val": record["val_loss"],
            "pseudo_dice/mean": record["mean"],
            "pseudo_dice/ema": record["ema"],
            "learning_rate": record["lr"],
            "seconds_per_epoch": record["seconds"],
            **{f"pseudo_dice/{name}": value for name, value in record["pseudo_dice"].items()},
        }
        for tag, value in scalars.items():
            if value is not None:
                self.events.add_scalar(tag, value, step)
        self.events.flush()


def summary_writer(folder: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` writing into ``folder``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


def metrics_csv(history: Sequence[EpochRecord]) -> str:
    """``CSV_COLUMNS`` then ``dice_<class>`` per class of the first epoch; undefined values are empty."""
    classes = list(history[0]["pseudo_dice"]) if history else []
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(f"dice_{name}" for name in classes)])
    for record in history:
        values = [record[column] for column in CSV_COLUMNS] + [record["pseudo_dice"].get(name) for name in classes]
        writer.writerow(["" if _undefined(value) else value for value in values])
    return text.getvalue()


def _undefined(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def json_line(record: EpochRecord) -> str:
    return json.dumps(_finite_or_none(record)) + "\n"


def _finite_or_none(value: Any) -> Any:
    """NaN and infinity -> None, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def epoch_summary(record: EpochRecord) -> str:
    """One line: ``epoch 3  train 0.8123  val 0.7712  dice organ 0.8100 tumour nan  ema 0.6400 ...``."""
    dice = " ".join(f"{name} {value:.4f}" for name, value in record["pseudo_dice"].items())
    ema = "n/a" if record["ema"] is None else f"{record['ema']:.4f}"
    return (
        f"epoch {record['epoch']}  train {record['train_loss']:.4f}  val {record['val_loss']:.4f}  "
        f"dice {dice}  mean {record['mean']:.4f}  ema {ema}  lr {record['lr']:.3g}  {record['seconds']:.1f} s"
    )


def plot_progress(history: Sequence[EpochRecord], path: Path) -> None:
    """Four panels over epochs: losses with pseudo-Dice/EMA on a twin axis, pseudo-Dice per class, epoch
    seconds, learning rate."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [record["epoch"] for record in history]
    figure = Figure(figsize=(10, 15))
    FigureCanvasAgg(figure)  # a figure of its own, never pyplot's global state or display backend
    losses, classes, seconds, rates = figure.subplots(4, 1)
    losses.plot(epochs, [r["train_loss"] for r in history], color="tab:blue", label="train loss")
    losses.plot(epochs, [r["val_loss"] for r in history], color="tab:red", label="val loss")
    dice = losses.twinx()
    dice.plot(epochs, [r["mean"] for r in history], color="tab:green", linestyle=":", label="pseudo Dice")
    dice.plot(epochs, [_nan_if_none(r["ema"]) for r in history], color="tab:green", label="pseudo Dice (EMA)")
    losses.set(xlabel="epoch", ylabel="loss")
    dice.set_ylabel("pseudo Dice")
    losses.legend(loc="upper left")
    dice.legend(loc="upper right")
    for name in history[0]["pseudo_dice"] if history else []:
        values = [_nan_if_none(r["pseudo_dice"].get(name)) for r in history]
        classes.plot(epochs, values, label=name)
    classes.set(xlabel="epoch", ylabel="pseudo Dice per class", ylim=(0, 1))
    if history and history[0]["pseudo_dice"]:
        classes.legend(loc="lower right")
    seconds.plot(epochs, [r["seconds"] for r in history], color="tab:blue")
    seconds.set(xlabel="epoch", ylabel="epoch time (s)")
    rates.plot(epochs, [r["lr"] for r in history], color="tab:blue")
    rates.set(xlabel="epoch", ylabel="learning rate")
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=80)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value

"""Progress of a run: rich bars on a terminal, or one flushed line per epoch (``--log-format plain``) so
that batch-job logs show progress as it happens; silent with --quiet."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn
from rich.text import Text


def epoch_line(record: dict, bold: bool = False) -> str:
    """One epoch's summary: model, lesson, epoch, loss, validation accuracy, LR, temperature, data share, time."""
    extra = f" T={record['temperature']:.2f}" if record.get("temperature") is not None else ""
    if record.get("data_fraction") is not None:
        extra += f" data={record['data_fraction']:.2f}"
    model = f"[bold]{record['model']}[/]" if bold else record["model"]
    of = f"/{record['epochs']}" if record.get("epochs") else ""
    return (f"{model} lesson {record['lesson']} epoch {record['epoch'] + 1}{of}  loss {record['train_loss']:.4f}  "
            f"val_acc {record['val_accuracy']:.4f}  lr {record['lr']:.3g}{extra}  {record['seconds']:.1f}s")


class PlainProgress:
    """A callback (train/callbacks.py) printing one line per epoch and per note, flushed at once: for logs,
    pipes and batch jobs. No bars, no markup."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.label = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stream.flush()

    def on_phase(self, label: str) -> None:
        self.label = label

    def on_record(self, record: dict) -> None:
        self._line(epoch_line(record))

    def on_note(self, text: str) -> None:
        self._line(Text.from_markup(text).plain)

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


class Progress(PlainProgress):
    """Rich bars on a terminal: a bar per epoch's batches, a line per epoch above them."""

    def __init__(self, console: Console | None = None):
        super().__init__()
        self.console = console or Console(stderr=True)
        self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=self.console, transient=True)
        self.task = None

    def __enter__(self) -> "Progress":
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def on_batches_start(self, total: int) -> None:
        self.task = self.bar.add_task(f"{self.label} batches", total=total)

    def on_batch(self) -> None:
        if self.task is not None:
            self.bar.advance(self.task)

    def on_batches_end(self) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None

    def on_record(self, record: dict) -> None:
        self.console.print(epoch_line(record, bold=True))

    def on_note(self, text: str) -> None:
        self.console.print(text)


def make_progress(quiet: bool, log_format: str = "auto"):
    """``auto``: rich bars when stdout and stderr are terminals, else plain lines (``run > log`` shows progress
    in the log as it happens); ``plain`` / ``rich`` force one."""
    if quiet:
        return None
    if log_format == "rich" or (log_format == "auto" and sys.stderr.isatty() and sys.stdout.isatty()):
        return Progress()
    return PlainProgress()

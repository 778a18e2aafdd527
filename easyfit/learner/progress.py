"""Progress output: tqdm bars on a terminal or in a notebook, plain lines elsewhere.

In a CI log or a pipe a progress bar is a stream of carriage returns; there the
callback prints the table header once and one line per epoch instead. In a Jupyter
notebook the epoch table is an HTML table updated in place (as fastai shows it), with
widget bars when ipywidgets is installed and no bars otherwise (tqdm's text bars would
print raw carriage returns and a TqdmWarning there). IPython is only used when the
program already runs in a kernel; a plain program never imports it.
"""
import math
import sys

from .callback import Callback
from .recorder import _in_notebook


class ProgressCallback(Callback):
    """Shows training progress. `file`: the stream (default: sys.stdout at fit time);
    `mode`: 'auto' (bars on a terminal or notebook, plain lines otherwise), 'bar' or 'plain'.
    """
    order = 60
    main_process_only = True  # data-parallel: rank 0 alone prints / writes

    def __init__(self, file=None, mode="auto"):
        if mode not in ("auto", "bar", "plain"):
            raise ValueError(f"ProgressCallback: mode must be 'auto', 'bar' or 'plain', got {mode!r}")
        self.file, self.mode = file, mode
        self.epoch_bar = self.batch_bar = None
        self._header_printed = False
        self.table = None

    def _stream(self):
        return self.file if self.file is not None else sys.stdout

    def _notebook(self):
        """Whether output goes to a Jupyter notebook's cell (auto mode, the default stream)."""
        return self.mode == "auto" and self.file is None and _in_notebook()

    def _use_bars(self):
        if self.mode != "auto":
            return self.mode == "bar"
        if self._notebook():
            return _has_widgets()
        stream = self._stream()
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())

    def _tqdm(self):
        if self._notebook():
            from tqdm.notebook import tqdm   # only chosen when ipywidgets is there
        else:
            from tqdm import tqdm
        return tqdm

    def before_fit(self):
        self.bars = self._use_bars()
        self._header_printed = False
        self.table = _HTMLTable() if self._notebook() and not self.learner.lr_finding else None
        if self.bars and not self.learner.lr_finding:
            self.epoch_bar = self._tqdm()(total=self.learner.n_epoch, file=self._stream(), unit="epoch",
                                          desc="fit", dynamic_ncols=True)

    def before_train(self):
        self._start_batches("train")

    def before_validate(self):
        self._start_batches("valid")

    def _start_batches(self, desc):
        if self.learner.in_fit and self.bars:
            self.batch_bar = self._tqdm()(total=len(self.learner.dl), file=self._stream(), leave=False,
                                          desc=desc, dynamic_ncols=True, mininterval=0.2)

    def after_batch(self):
        bar = self.batch_bar
        if bar is not None:
            bar.update(1)
            if self.learner.training and bar.n % 10 == 0:
                recorder = getattr(self.learner, "recorder", None)
                if recorder is not None and math.isfinite(recorder.smooth_loss):
                    bar.set_postfix(loss=f"{recorder.smooth_loss:.4f}", refresh=False)

    def after_train(self):
        self._close_batches()

    def after_validate(self):
        self._close_batches()

    def _close_batches(self):
        if self.batch_bar is not None:
            self.batch_bar.close()
            self.batch_bar = None

    def after_epoch(self):
        learn = self.learner
        if learn.lr_finding:
            return
        recorder = getattr(learn, "recorder", None)
        if recorder is not None and recorder.log and self.table is not None:
            self.table.add_row(recorder.metric_names, recorder.log)
        elif recorder is not None and recorder.log:
            widths = [max(10, len(name)) for name in recorder.metric_names]
            if not self._header_printed:
                self._write(format_row(recorder.metric_names, widths))
                self._header_printed = True
            self._write(format_row(recorder.log, widths))
        if self.epoch_bar is not None:
            self.epoch_bar.update(1)

    def after_fit(self):
        self._close_batches()
        if self.epoch_bar is not None:
            self.epoch_bar.close()
            self.epoch_bar = None
        reason = getattr(self.learner, "stop_reason", None)
        if reason and self.learner.in_fit:
            self._write(reason)

    def _write(self, line):
        if self.bars:
            self._tqdm().write(line, file=self._stream())
        else:
            print(line, file=self._stream(), flush=True)


def _has_widgets():
    """Whether ipywidgets (tqdm's notebook bars) can be imported."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class _HTMLTable:
    """The epoch table as HTML in a notebook cell, shown once and updated in place each epoch."""

    def __init__(self):
        self.rows, self.handle = [], None

    def add_row(self, names, values):
        from IPython.display import HTML, display   # in a kernel, IPython is already imported
        self.rows.append(values)
        head = "".join(f"<th>{name}</th>" for name in names)
        body = "".join("<tr>" + "".join(f"<td>{_cell(value)}</td>" for value in row) + "</tr>" for row in self.rows)
        html = HTML(f'<table border="1" class="dataframe"><thead><tr style="text-align: left;">{head}</tr>'
                    f"</thead><tbody>{body}</tbody></table>")
        if self.handle is None:
            self.handle = display(html, display_id=True)
        else:
            self.handle.update(html)


def _cell(value):
    if isinstance(value, (str, int)):
        return str(value)
    return f"{value:.6f}" if math.isfinite(value) else str(value)


def format_row(values, widths):
    """One line of the metrics table (names or values) in columns of the given widths."""
    cells = []
    for value, width in zip(values, widths):
        if isinstance(value, (str, int)):
            text = str(value)
        else:
            text = f"{value:.6f}" if math.isfinite(value) else str(value)
        cells.append(text.ljust(width))
    return "  ".join(cells).rstrip()

"""What ``python -m utils.run`` prints while a notebook runs: one line per code cell, then the cell's latest
progress bar (tqdm's text bars of inference and weight loading, the Trainer's HTML bar of training):
redrawn in place on a terminal, every half second; elsewhere (a CI log) a line every 30 s of a cell
that runs that long.

papermill calls its engine's notebook manager at each cell start and after each kernel message;
``FeedbackEngine`` (registered as ``ENGINE``) hooks a ``Feedback`` in there. The notebook's outputs
themselves are untouched: the executed copy holds them all. A line a notebook prints as a notice
(``utils.io.notice``: files moved aside or removed) is repeated on the terminal as it comes.

Ctrl-C (``ctrl_c``) interrupts the running cell's kernel, as Jupyter's stop button does, and no further cell
starts; papermill then shuts the kernel down as after any failed cell. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
import weakref
from typing import Any, Iterator, TextIO

from papermill.engines import NBClientEngine, papermill_engines

from utils.io import NOTICE
from utils.text import terminal_safe

ENGINE = "emocause"
# tqdm: "work:  57%|█████▋    | 16/28 [00:08<00:06, 1.92it/s]" -> "work 57% 16/28 [00:08<00:06, 1.92it/s]"
TQDM_BAR = re.compile(r"^\s*(?P<desc>[^|]*?):?\s*(?P<percent>\d+%)\|[^|]*\|\s*(?P<rest>.+?)\s*$")
# transformers' notebook bar: <progress value='3' max='8' ...></progress> [3/8 00:02 < 00:05, 1.2 it/s, Epoch 0.38/1]
HTML_BAR = re.compile(r"<progress value='(\d+)' max='(\d+)'[^>]*></progress>\s*(\[[^\]]*\])?")
SKIPPED_LINE = re.compile(r"^(\s|#|import |from |def |class |@|$)")  # not what a cell is about


def cell_summary(source: str, width: int = 90) -> str:
    """The first top-level statement of a cell that is not an import or a definition, without its trailing
    comment, cut to ``width``."""
    lines = source.splitlines()
    line = next((l for l in lines if not SKIPPED_LINE.match(l)), next((l for l in lines if l.strip()), ""))
    line = line.split("  # ")[0].strip()
    return line if len(line) <= width else line[:width - 3] + "..."


def latest_bar(outputs: list[dict]) -> str | None:
    """The newest progress bar among a cell's outputs, as one line of text; None when it has none."""
    for output in reversed(outputs):
        if output.get("output_type") == "stream":
            for segment in reversed(re.split(r"[\r\n]", "".join(output.get("text", "")))):
                if match := TQDM_BAR.match(segment):
                    return f"{match['desc'] or 'progress'} {match['percent']} {match['rest']}"
        html = "".join(output.get("data", {}).get("text/html", ""))
        if match := HTML_BAR.search(html):
            return f"trainer {match[3] or f'{match[1]}/{match[2]}'}"
    return None


KERNELS: "weakref.WeakSet[Any]" = weakref.WeakSet()  # the kernel managers of this process, for Ctrl-C


def kernel_manager() -> type:
    """The kernel manager the runner starts kernels with: on POSIX over IPC (a socket file only this user can
    open), so the kernel opens no TCP port and has no plain-text traffic to warn about; TCP elsewhere. It sends
    no interrupt before a shutdown (jupyter_client does, always: a kernel caught inside a message handler then
    logged "KeyboardInterrupt caught in kernel" after a run nobody interrupted); a busy kernel that ignores the
    shutdown request is killed after jupyter_client's wait, as before."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        transport = "ipc" if os.name == "posix" else "tcp"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            KERNELS.add(self)

        async def _async_interrupt_kernel(self) -> None:
            if not self.shutting_down:  # an interrupt asked for (interrupt_kernel), not the one before a shutdown
                await super()._async_interrupt_kernel()

    return QuietKernelManager


def signal_kernels(signum: int) -> None:
    """Send ``signum`` to every running kernel of this process (its whole process group: jupyter_client starts
    each in a session of its own, which the terminal's Ctrl-C does not reach)."""
    for km in list(KERNELS):
        provisioner = getattr(km, "provisioner", None)
        process = getattr(provisioner, "process", None)
        if process is None or process.poll() is not None:  # shut down (its pid may be another process's by now)
            continue
        pgid = getattr(provisioner, "pgid", None)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum) if pgid and hasattr(os, "killpg") else process.send_signal(signum)


@contextlib.contextmanager
def ctrl_c(feedback: "Feedback") -> Iterator[None]:
    """While a notebook runs: the first Ctrl-C interrupts its kernel and lets no further cell start
    (``feedback.stopped``), so papermill ends the run and shuts the kernel down itself; a second one raises
    KeyboardInterrupt here at once. Outside the main thread (no signals there) nothing changes."""
    def on_sigint(signum: int, frame: Any) -> None:
        if feedback.stopped:
            raise KeyboardInterrupt
        feedback.stopped = True
        if feedback.cell is not None:  # a cell runs; a kernel still starting would die of it, with a traceback
            signal_kernels(signal.SIGINT)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def notices(outputs: list[dict]) -> list[str]:
    """The notice lines (``utils.io.NOTICE``) a cell printed to stdout so far, in order."""
    text = "".join("".join(o.get("text", "")) for o in outputs
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    return [line for line in text.splitlines() if line.startswith(NOTICE)] if NOTICE in text else []


class Feedback:
    """The terminal lines of one notebook's run."""

    def __init__(self, name: str, out: TextIO | None = None, every_s: float | None = None) -> None:
        self.name, self.out = name, out or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.every_s = every_s if every_s is not None else 0.5 if self.tty else 30.0
        self.cell: Any = None
        self.shown, self.last, self.open = "", 0.0, False
        self.noticed = 0  # notices of the running cell already repeated
        self.where = "before its first cell"  # the running cell, for the line a stopped run ends with
        self.stopped = False  # Ctrl-C was pressed (``ctrl_c``): no further cell starts

    def cell_start(self, cell: Any, index: int, cells: list) -> None:
        """A line naming the code cell that starts (not the parameters cells), numbered as in the notebook's
        file, which has no injected-parameters cell."""
        if not _numbered(cell) or "parameters" in cell.get("metadata", {}).get("tags", []):
            return
        if self.stopped:  # Ctrl-C between cells: papermill shuts the kernel down as after a failed cell
            raise KeyboardInterrupt
        number = sum(map(_numbered, cells[:index + 1]))
        total = sum(map(_numbered, cells))
        self.cell, self.shown, self.last, self.noticed = cell, "", time.monotonic(), 0  # a quick cell shows no bar
        self.where = f"cell {number}/{total} ({cell_summary(''.join(cell.get('source', '')), 60)})"
        self._write(f"[emocause] {self.name} cell {number}/{total}: {cell_summary(''.join(cell.get('source', '')))}")

    def message(self) -> None:
        """After a kernel message: repeat the running cell's new notices, and show its latest progress bar when it
        changed (throttled)."""
        if self.cell is None:
            return
        found = notices(self.cell.get("outputs", []))
        for line in found[self.noticed:]:
            self._write(line)
        self.noticed = len(found)
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        bar = latest_bar(self.cell.get("outputs", []))
        if bar and bar != self.shown:
            self.shown, self.last = bar, now
            if self.tty:
                self.out.write(f"\r\033[K    {terminal_safe(bar)}")
                self.open = True
                self.out.flush()
            else:
                self._write(f"    {bar}")

    def close(self) -> None:
        """End a progress line left open on the terminal."""
        if self.open:
            self.out.write("\n")
            self.out.flush()
            self.open = False

    def _write(self, line: str) -> None:
        self.close()
        self.out.write(terminal_safe(line) + "\n")  # a notice or a bar may quote a conversation
        self.out.flush()


def _numbered(cell: Any) -> bool:
    """A code cell of the notebook's file (papermill's injected-parameters cell is not)."""
    return cell.get("cell_type") == "code" and "injected-parameters" not in cell.get("metadata", {}).get("tags", [])


class FeedbackEngine(NBClientEngine):
    """papermill's nbclient engine, plus a ``Feedback`` told of every cell start and kernel message."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, feedback: Feedback | None = None, **kwargs):
        if feedback is None:
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
        cell_start, autosave_cell = nb_man.cell_start, nb_man.autosave_cell

        def on_cell_start(cell, cell_index=None, **kw):
            feedback.cell_start(cell, cell_index, nb_man.nb.cells)
            return cell_start(cell, cell_index, **kw)

        def on_message():  # papermill's client calls autosave_cell after every kernel message
            feedback.message()
            return autosave_cell()

        nb_man.cell_start, nb_man.autosave_cell = on_cell_start, on_message
        try:
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
        finally:
            feedback.close()


papermill_engines.register(ENGINE, FeedbackEngine)

"""Where the progress lines of pipeline.progress go: the flow run's log under Prefect, the terminal otherwise.

``show_progress()`` (called by the CLI, the flow and each fit task, idempotent) gives the
``synth_augment`` logger one ``ProgressHandler`` at INFO and stops it propagating to the root
logger. Inside a Prefect flow or task run, the handler hands each line to ``get_run_logger()`` of
the run the emitting thread belongs to: the line lands in the run's log in the UI and, through
Prefect's own console handler, in the ``prefect worker`` output, exactly once (propagating as well
would print it a second time through the root logger's console handler). Outside a run
(``synth-augment run``, ``synth-augment generator train``) it writes the line to stderr with
``tqdm.write``, above any progress bar instead of through it. The lines are written whether or
not bars are shown: one line a minute does not crowd a terminal, and it is what survives in a
redirected log where a bar's carriage returns leave one unreadable line.

``GeneratorProgress`` is the flow's generator-progress artifact, moved by the same lines.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.auto import tqdm

from pipeline.config import DomainConfig
from pipeline.progress import LOGGER_NAME

PROJECT_LOGGER = "synth_augment"
# a progress line as ProgressHandler writes it to stderr: "12:04:31 generator: step 120/2000 (6%), ..."
CHILD_LINE = re.compile(r"\d\d:\d\d:\d\d (?P<text>(?P<name>[^:]+): \w+ (?P<done>\d+)/(?P<total>\d+) \(\d+%\).*)")
progress_log = logging.getLogger(LOGGER_NAME)


def run_logger() -> Any:
    """The current Prefect flow/task run's logger, or None outside a run (Prefect not even imported)."""
    if "prefect.context" not in sys.modules:
        return None
    from prefect import get_run_logger
    from prefect.context import FlowRunContext, TaskRunContext

    if TaskRunContext.get() is None and FlowRunContext.get() is None:
        return None
    return get_run_logger()


class ProgressHandler(logging.Handler):
    """A record to the current Prefect run's log when there is one, else to stderr above any tqdm bar."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = run_logger()
            if logger is not None:
                logger.log(record.levelno, record.getMessage())
            else:
                tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - a progress line must never stop the work
            self.handleError(record)


def relay_progress(lines: Iterable[str], echo: TextIO | None = None) -> None:
    """A child process's stderr (``accelerate launch`` of the generator): its progress lines are logged again
    in this process (so they reach the run log and the artifact), every other line is echoed to ``echo``."""
    for line in lines:
        match = CHILD_LINE.fullmatch(line.rstrip("\n"))
        if match is None:
            (echo or sys.stderr).write(line)
            continue
        progress_log.info(match["text"], extra={"progress": {"name": match["name"], "done": int(match["done"]),
                                                             "total": int(match["total"])}})


def show_progress() -> None:
    """Route the project's INFO lines (pipeline.progress) through one ``ProgressHandler`` (idempotent)."""
    logger = logging.getLogger(PROJECT_LOGGER)
    if not any(isinstance(handler, ProgressHandler) for handler in logger.handlers):
        logger.addHandler(ProgressHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


class GeneratorProgress(logging.Handler):
    """A progress artifact for generator training, moved by the generator's progress lines.

    While the context is open it listens on ``synth_augment.progress`` for the lines of the
    ``generator`` loop emitted by this thread (the task's thread, where training runs) and sets the
    artifact to their share of ``generator.train_steps``: from the first step on, then every line
    (once a minute by default), and 100 when training ends without an error. Training launched in other
    processes (``generator_processes`` > 1) reaches it through ``relay_progress`` in the task's thread.
    """

    def __init__(self, config: DomainConfig, key: str) -> None:
        super().__init__(logging.INFO)
        self.config, self.key = config, key
        self.artifact_id: Any = None
        self._thread = threading.get_ident()

    def __enter__(self) -> GeneratorProgress:
        from prefect import get_run_logger
        from prefect.artifacts import create_progress_artifact

        show_progress()
        try:
            self.artifact_id = create_progress_artifact(
                progress=0.0, key=self.key,
                description=f"generator training of {self.config.name}: share of "
                            f"{self.config.generator.train_steps} steps done")
        except Exception as exc:  # noqa: BLE001 - a progress bar must never stop training
            get_run_logger().warning(f"no progress artifact: {exc}")
            return self
        self._thread = threading.get_ident()
        logging.getLogger(LOGGER_NAME).addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger(LOGGER_NAME).removeHandler(self)
        if self.artifact_id is not None and exc[0] is None:
            self._update(100.0)

    def emit(self, record: logging.LogRecord) -> None:
        info = getattr(record, "progress", None)
        if not info or info.get("name") != "generator" or record.thread != self._thread:
            return
        self._update(min(100.0, 100.0 * info["done"] / max(info["total"], 1)))

    def _update(self, progress: float) -> None:
        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(artifact_id=self.artifact_id, progress=progress)
        except Exception:  # noqa: BLE001
            pass

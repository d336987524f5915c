"""emp-hf's console messages, seen wherever transformers' own INFO lines are.

The `emp_hf` logger prints its records itself, as transformers prints its own (`[emp_hf] message` on
stderr), unless the application configured logging: then a handler on the root logger receives them by
propagation (as `logging.basicConfig` or pytest's capture do) and this one stays silent, so nothing prints
twice. Its level follows the Trainer's `log_level` (`PruningMixin` sets it per process, as the Trainer sets
transformers' verbosity); the vision scripts set INFO on the main process.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "emp_hf"


class _ConsoleHandler(logging.StreamHandler):
    """stderr as it is when a record comes (not when the handler was made), silent where the root logger has
    a handler of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("[emp_hf] %(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def install_console_handler() -> None:
    """Give the `emp_hf` logger its console handler, once per process."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())


def show_plan_on_main_process() -> None:
    """The scripts' console: the plan and the scorer (INFO) from the main process, only warnings from the rest."""
    import os

    main = int(os.environ.get("RANK", "0")) == 0
    logging.getLogger(LOGGER_NAME).setLevel(logging.INFO if main else logging.WARNING)

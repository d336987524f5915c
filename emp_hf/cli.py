"""The scripts' command line: one parser for every entry point, one-line errors, no empty output folders.

A mistake on the command line (a misspelt flag, a value out of range, a missing path) is one line naming the
argument and what it accepts, and a non-zero exit, before any data or model loads where the check allows it.
A run that fails before it wrote anything leaves no empty output folder behind. `EMP_HF_TRACEBACK=1` shows
the full traceback of any error (for a bug report).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import shutil
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from transformers import HfArgumentParser

#: Exit status of a run stopped by SIGTERM after its checkpoint (128 + 15, as the shell reports it).
EXIT_INTERRUPTED = 143


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written (its example keeps its lines), every flag with its default (unless its help
    already says what the default is)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default:" in text.lower():
            return text
        return super()._get_help_string(action)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _OneLineErrors:
    """argparse's error as one line (its usage block is what --help is for) and a did-you-mean for flags."""

    prog: str

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {_one_line(message)}", file=sys.stderr)
        sys.exit(2)

    def _flags(self) -> list[str]:
        return [o for action in self._actions for o in action.option_strings if o.startswith("--")]  # type: ignore[attr-defined]

    def reject_unknown(self, rest: Sequence[str]) -> None:
        if not rest:
            return
        unknown = [a for a in rest if a.startswith("-")]
        first = (unknown or list(rest))[0]
        close = difflib.get_close_matches(first.split("=")[0], self._flags(), n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see --help."
        self.error(f"{'unknown flag' if unknown else 'unexpected argument'} {first}{hint}")


class ArgumentParser(_OneLineErrors, argparse.ArgumentParser):
    """`argparse.ArgumentParser` for the sweeps and tools: one-line errors, did-you-mean, defaults in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        parsed, rest = self.parse_known_args(args, namespace)
        self.reject_unknown(rest)
        return parsed


class DataclassParser(_OneLineErrors, HfArgumentParser):
    """`HfArgumentParser` whose every mistake is one line: unknown flags (with the closest known one), argparse's
    own errors, and the dataclasses' checks (`__post_init__`: a value out of range, a conflict between flags)."""

    def __init__(self, dataclass_types: Any, prog: str, description: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(dataclass_types, prog=prog, description=description, **kwargs)

    def parse(self, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
        """The dataclasses from `argv` (or one .json file of their fields)."""
        argv = list(sys.argv[1:] if argv is None else argv)
        try:
            if len(argv) == 1 and argv[0].endswith(".json"):
                if not os.path.isfile(argv[0]):
                    self.error(f"no such arguments file: {argv[0]}")
                return tuple(self.parse_json_file(os.path.abspath(argv[0])))
            *parsed, rest = self.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        except (ValueError, TypeError) as error:
            self.error(str(error))
        self.reject_unknown(rest)
        return tuple(parsed)


#: Errors that are about the input (a value, a path, a missing package, the network), whoever raised them.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError)


def _raised_by_emp_hf(error: BaseException) -> bool:
    """Whether the innermost frame is this package's own code: its refusals are written for the user."""
    tb = error.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    package = str(Path(__file__).resolve().parent)
    return last is not None and str(Path(last).resolve()).startswith(package)


class Run:
    """What `guard` knows about the run: its output folder, set once the arguments are parsed."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self._output_dir: Path | None = None
        self._existed = True

    @property
    def output_dir(self) -> Path | None:
        return self._output_dir

    @output_dir.setter
    def output_dir(self, folder: str | os.PathLike[str] | None) -> None:
        self._output_dir = None if folder is None else Path(folder)
        self._existed = self._output_dir is None or self._output_dir.exists()

    def remove_if_empty(self) -> None:
        """Remove the output folder this run created if nothing but its lock file is in it."""
        from .core.run_lock import LOCK_NAME

        folder = self._output_dir
        if folder is None or self._existed or not folder.is_dir():
            return
        if all(f.name == LOCK_NAME for f in folder.rglob("*") if f.is_file()):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def guard(prog: str) -> Iterator[Run]:
    """Run a script's body: a mistake the user can fix becomes one line on stderr and exit status 1, a run
    stopped by SIGTERM after its checkpoint exits 143, Ctrl-C exits 130; a folder the failed run created and
    left empty is removed. Other errors (bugs) keep their traceback."""
    from .trainer.checkpoints import TrainingInterrupted

    run = Run(prog)
    show = os.environ.get("EMP_HF_TRACEBACK", "") not in ("", "0")
    try:
        yield run
    except SystemExit:
        run.remove_if_empty()
        raise
    except TrainingInterrupted as error:
        if show:
            traceback.print_exc()
        print(f"{prog}: {_one_line(str(error))}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        run.remove_if_empty()
        print(f"{prog}: interrupted (Ctrl-C).", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        run.remove_if_empty()
        if show or not (isinstance(error, INPUT_ERRORS) or _raised_by_emp_hf(error)):
            raise
        print(f"{prog}: error: {_one_line(str(error)) or type(error).__name__}", file=sys.stderr)
        sys.exit(1)

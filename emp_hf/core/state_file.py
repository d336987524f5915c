"""Pruning state on disk: written atomically, read without executing anything, damage named.

Both front ends keep their pruning state (and the vision loop its whole checkpoint state) in one
`torch.save` file of tensors and plain Python values. Writing goes to a temporary name in the same
folder and is renamed into place once complete, so a kill during a save leaves the previous file or
none, never a truncated one. Reading uses `weights_only=True`: a file that holds anything else (a
crafted pickle) is refused before any of it runs.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class DamagedStateError(ValueError):
    """A state file that cannot be used: truncated, not a torch file, or holding executable objects."""


def save_state_file(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_state_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state in `path`, loaded with `weights_only=True`; any failure is one `DamagedStateError` naming
    the file."""
    path = Path(path)
    if not path.is_file():
        raise DamagedStateError(f"{path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch cannot tell a garbled file from a crafted one (both: "Unsupported operand"), so neither do we.
        detail = str(error).split("WeightsUnpickler error:")[-1].strip().split("\n")[0][:120]
        raise DamagedStateError(
            f"{path} is damaged or unsafe: it is not a file of tensors and plain Python values ({detail}). It was "
            "read with weights_only=True, so nothing in it was run. Resume from another checkpoint."
        ) from None
    except (EOFError, RuntimeError, OSError, MemoryError, ValueError, OverflowError, IndexError, KeyError) as error:
        raise DamagedStateError(
            f"{path} is damaged (truncated or not a torch file: {type(error).__name__}: {str(error)[:200]}); "
            "resume from another checkpoint."
        ) from None
    if not isinstance(state, dict):
        raise DamagedStateError(f"{path} is damaged: it holds a {type(state).__name__}, not a state dict.")
    return state


def require(state: dict[str, Any], path: str | os.PathLike[str], *keys: str) -> None:
    """Name the first missing key of a loaded state as damage of that file."""
    for key in keys:
        if key not in state:
            raise DamagedStateError(f"{path} is damaged or from another program: it lacks {key!r}.")


def newest_complete(folder: str | os.PathLike[str], prefix: str, load: Callable[[Path], T]) -> tuple[Path, T] | None:
    """The newest checkpoint folder `<prefix><number>` under `folder` that `load` accepts, with what `load`
    returned (so the caller need not read it again); each newer folder that `load` refused with a
    `DamagedStateError` is logged as skipped, with the reason. None when no folder is accepted."""
    import logging
    import re

    logger = logging.getLogger("emp_hf")
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    found = sorted(
        ((int(m.group(1)), p) for p in Path(folder).iterdir() if p.is_dir() and (m := pattern.match(p.name))),
        reverse=True,
    ) if Path(folder).is_dir() else []
    for _, path in found:
        try:
            return path, load(path)
        except DamagedStateError as reason:
            logger.warning("Skipping checkpoint %s: %s", path, reason)
    return None

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


def _sweep_stale_temporaries(path: Path) -> None:
    """Remove the temporary files of `path` that a process killed mid-write left, never a live process's."""
    from .run_lock import pid_is_alive

    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        owner = stale.name.rsplit("-", 1)[-1]
        if owner.isdigit() and int(owner) != os.getpid() and pid_is_alive(int(owner)):
            continue
        stale.unlink(missing_ok=True)


def no_space_error(error: BaseException, path: str | os.PathLike[str]) -> OSError | None:
    """The full-disk error of a failed write, naming the file, or None when `error` is something else. torch's
    zip writer reports a full disk as `RuntimeError: ... unexpected pos` or `file write failed`, without a word
    about space; the free space of the file's disk tells."""
    import errno
    import shutil

    full = (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error)
    if not full and any(s in str(error) for s in ("unexpected pos", "file write failed", "PytorchStreamWriter")):
        try:
            full = shutil.disk_usage(Path(path).parent if not Path(path).is_dir() else path).free < 1 << 20
        except OSError:
            full = False
    if not full:
        return None
    return OSError(errno.ENOSPC, f"No space left on device while writing {path}: free space on that disk, or "
                                 "write the run elsewhere (another output folder); earlier checkpoints are intact")


def write_atomically(path: str | os.PathLike[str], write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write `path` through a temporary file in the same folder, synced and renamed into place, so that a kill
    leaves the old file or the new one; a full disk is reported as such, naming the file."""
    path = Path(path)
    _sweep_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as error:  # noqa: BLE001 - rewrapped only when it is a full disk
        full = no_space_error(error, path)
        if full is not None:
            raise full from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def save_state_file(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    write_atomically(path, lambda f: torch.save(state, f))


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


# ------------------------------------------------------------------- checkpoint manifests
MANIFEST = "emp_hf_checkpoint.json"
#: transformers' JIT checkpoint marks a save in progress with this file and removes it after the save.
JIT_SENTINEL = "checkpoint-is-incomplete.txt"


def write_manifest(folder: str | os.PathLike[str], step: int) -> None:
    """Written last into a checkpoint folder: every file in it with its size, and the step. A checkpoint is
    complete when its manifest matches what is on disk (`check_manifest`)."""
    import json

    folder = Path(folder)
    files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name not in (MANIFEST, JIT_SENTINEL) and not p.name.startswith(f".{MANIFEST}.tmp-")}
    body = json.dumps({"global_step": int(step), "files": files}, indent=1)
    write_atomically(folder / MANIFEST, lambda f: f.write(body.encode()))


def remove_manifest(folder: str | os.PathLike[str]) -> None:
    """Before anything of a save is written into `folder` (a folder saved again, e.g. after a resume): until the
    new manifest is written, the folder does not count as complete."""
    (Path(folder) / MANIFEST).unlink(missing_ok=True)


def check_manifest(folder: str | os.PathLike[str], step: int) -> None:
    """Refuse a checkpoint whose manifest is missing, of another step, or does not match the files on disk."""
    import json

    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DamagedStateError(f"no {MANIFEST} (the save did not finish, or an emp-hf before the manifests wrote it)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        saved_step, files = int(manifest["global_step"]), dict(manifest["files"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise DamagedStateError(f"{path} is damaged ({type(error).__name__})") from None
    if saved_step != step:
        raise DamagedStateError(f"{path} is of step {saved_step}, not {step}: the folder mixes two saves")
    if (Path(folder) / JIT_SENTINEL).exists():
        raise DamagedStateError(f"{Path(folder) / JIT_SENTINEL} is still there: the JIT checkpoint did not finish")
    for name, size in files.items():
        file = Path(folder) / name
        if not file.is_file():
            raise DamagedStateError(f"{file} is missing (the manifest lists it)")
        if file.stat().st_size != int(size):
            raise DamagedStateError(f"{file} is damaged: it has {file.stat().st_size:,} bytes where the save wrote "
                                    f"{int(size):,} (cut short, or rewritten after the save)")

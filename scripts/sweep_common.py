"""What every sweep script shares: the record of how it was invoked, and its `--variants`.

Each sweep folder's `sweep.json` lists every command that wrote into it, with the machine and the start
time, so that a results file can name the command behind each block. Variants are ablations: `LABEL:FLAGS`
runs every job once more with FLAGS added; the label names folders, so it must be a plain identifier (a '/'
would nest the run folder where the table does not look, and the run would vanish from it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
from pathlib import Path


def record_invocation(base: Path, script: str, argv: list[str], machine: str, kind: str | None = None) -> Path:
    """Append this command, the machine and the time to `base`/sweep.json (made with `kind` if new)."""
    base.mkdir(parents=True, exist_ok=True)
    meta_path = base / "sweep.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {
        **({"kind": kind} if kind else {}), "invocations": []}
    meta["invocations"].append({"command": f"python scripts/{script} " + " ".join(map(shlex.quote, argv)),
                                "machine": machine,
                                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return base


def parse_variants(parser: argparse.ArgumentParser, values: list[str]) -> list[tuple[str, str]]:
    """`LABEL:FLAGS` strings as (label, flags); a label that cannot name a folder is a usage error."""
    variants = [(v.partition(":")[0], v.partition(":")[2]) for v in values]
    bad = [label for label, _ in variants if not label.isidentifier()]
    if bad:
        parser.error(f"--variants labels must be letters, digits and '_' (they name folders); got {bad}")
    return variants

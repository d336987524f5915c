"""A pruner's checkpointed state: its selections packed for the file, and every field checked before use.

A state file is data from outside the run (a copy, an edit, a disk fault): a field of the right type but an
impossible value (epoch -1, an index outside the data, a repeated index, a negative count) would resume a run
that trains other rows than the plan's. These checks refuse it, naming the field.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .packed import PackedMask
from .policies import Selection

if TYPE_CHECKING:
    from .pruner import DataPruner


def pack_selection(selection: Selection | None) -> dict[str, Any] | None:
    if selection is None:
        return None
    if selection.is_every:
        return {"every": len(selection)}
    up = selection.upweighted
    weights = {"upweighted": None if up is None else up.data.clone(), "weight": selection.weight}
    if selection.mask is not None:
        return {"packed": selection.mask.data.clone(), "size": len(selection), **weights}
    return {"indices": selection.indices.clone(), **weights}


def unpack_selection(packed: dict[str, Any] | None, num_examples: int) -> Selection | None:
    if packed is None:
        return None
    if "every" in packed:  # a full epoch, saved without its index vector
        if int(packed["every"]) != num_examples:
            raise ValueError(f"a full epoch of {packed['every']} examples for {num_examples}")
        return Selection.every(num_examples)
    if packed.get("weights") is not None:  # per-example weights: InfoBatch before its rules version 2
        raise ValueError("InfoBatch loss weights of an earlier emp-hf")
    up = packed.get("upweighted")
    up = None if up is None else PackedMask(up, num_examples)
    weight = float(packed.get("weight", 1.0))
    if "packed" in packed:
        mask = PackedMask(packed["packed"], num_examples)
        if mask.count() != int(packed["size"]):
            raise ValueError(f"a packed selection of {mask.count()} examples saved as {packed['size']}")
        return Selection.packed(mask, int(packed["size"]), up, weight)
    indices = packed["indices"]
    if up is None and indices.numel() == num_examples and bool(
            torch.equal(indices, torch.arange(num_examples, dtype=indices.dtype))):
        return Selection.every(num_examples)  # a full epoch saved by an earlier emp-hf, as 0 .. N-1
    return Selection(indices, up, weight)


def _bad(field: str, what: str) -> ValueError:
    return ValueError(f"field {field!r} {what}")


def _epoch_field(value: Any, field: str, epochs: int, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < epochs:
        raise _bad(field, f"is {value!r}; it must be an epoch of the plan, 0 .. {epochs - 1}")


def _check_selection_fields(packed: Any, field: str, n: int) -> None:
    if packed is None:
        return
    if not isinstance(packed, dict):
        raise _bad(field, f"is a {type(packed).__name__}, not a selection")
    weight = packed.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise _bad(f"{field}.weight", f"is {weight!r}; a loss weight is a finite number > 0")
    indices = packed.get("indices")
    if indices is None:
        return
    if not isinstance(indices, Tensor) or indices.dim() != 1 or indices.is_floating_point() or indices.is_complex():
        raise _bad(f"{field}.indices", "is not a 1-D tensor of integer indices")
    if indices.numel():
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= n:
            raise _bad(f"{field}.indices", f"holds {low} .. {high}, outside the {n} examples [0, {n})")
        if indices.numel() > 1 and not bool((indices[1:] > indices[:-1]).all()):
            raise _bad(f"{field}.indices", "is not strictly ascending: it repeats (or disorders) examples, which "
                                           "would train an example more than once per epoch")


def check_state_fields(state: dict[str, Any], pruner: DataPruner) -> None:
    """Types and ranges of a checkpoint's fields, before any of it is used: a forged or damaged but well-typed
    state (epoch -1, an index outside the data, a repeated index, a seed the plan does not have) is refused."""
    epochs, n = pruner.schedule.num_epochs, pruner.num_examples
    seed = state["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed != pruner.seed:
        raise _bad("seed", f"is {seed!r}, but the plan's pruning_seed is {pruner.seed}")
    _epoch_field(state["epoch"], "epoch", epochs)
    _epoch_field(state["pruned_epoch"], "pruned_epoch", epochs)
    _check_selection_fields(state["selection"], "selection", n)
    _check_selection_fields(state["pruned"], "pruned", n)
    if state["selection"] is not None and state["epoch"] is None:
        raise _bad("epoch", "is None although a selection is saved")


def check_restored(pruner: DataPruner) -> None:
    """The restored store and report, checked for values no run can produce."""
    epochs, n, store = pruner.schedule.num_epochs, pruner.num_examples, pruner.store
    if pruner.epoch is not None and pruner.selection is not None:
        if pruner.schedule.is_full(pruner.epoch) and not pruner.selection.is_every \
                and pruner._budget_cut(pruner.epoch) is None:
            raise _bad("selection", f"holds {len(pruner.selection)} of {n} examples for epoch {pruner.epoch}, which "
                                    "the plan trains on all of them")
    for name in ("loss", "entropy", "ema", "ema_var"):
        if not bool(torch.isfinite(getattr(store, name)).all()):
            raise _bad(f"store.{name}", "holds NaN or inf; the store only ever keeps finite scores")
    if bool((store.ema_var < 0).any()):
        raise _bad("store.ema_var", "holds a negative variance")
    for name in ("times_trained", "times_selected"):
        if bool((getattr(store, name) < 0).any()):
            raise _bad(f"store.{name}", "holds a negative count")
    if bool(((store.last_epoch < -1) | (store.last_epoch >= epochs)).any()):
        raise _bad("store.last_epoch", f"holds an epoch outside -1 .. {epochs - 1}")
    if store.ema_alpha != pruner.config.ema_alpha:
        raise _bad("store.ema_alpha", f"is {store.ema_alpha}, but the plan's ema_alpha is {pruner.config.ema_alpha}")
    if store.nonfinite_count < 0 or store.rows_seen < 0:
        raise _bad("store", "holds a negative count of rows")
    for epoch, record in pruner.report.epochs.items():
        _epoch_field(epoch, "report.epochs", epochs, optional=False)
        if not 0 <= record.kept <= n or record.forwarded < 0 or record.scored_rows < 0:
            raise _bad(f"report.epochs[{epoch}]", f"holds kept={record.kept}, forwarded={record.forwarded} for {n} "
                                                 "examples")

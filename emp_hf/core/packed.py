"""Boolean vectors packed eight to a byte.

A selection of 10^8 examples held as indices is up to 400 MB (and as much again in every checkpoint); as a
packed mask it is 12.5 MB whatever the kept fraction. InfoBatch's up-weighted examples are held the same way
instead of one float32 weight per kept example. Bit i of the set is bit (i % 8) of byte (i // 8).
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

#: Packing and unpacking work through this many entries at a time (a multiple of 8): small temporaries.
_PART = 1 << 20
_SPREAD = 0x0101010101010101  # a byte copied into each of the 8 bytes of an int64
_BIT_OF_BYTE = -0x7FBFDFEFF7FBFDFF  # 0x8040201008040201 as a signed int64: byte i keeps bit i
_GATHER = 0x0102040810204080  # 8 bytes of 0/1, multiplied: byte i's bit lands in bit 56 + i


def _check_byte_order() -> None:
    if sys.byteorder != "little":  # the int64 views below read bytes in little-endian order
        raise RuntimeError("emp-hf's packed selections need a little-endian machine (x86-64, ARM).")


class PackedMask:
    """A boolean vector of `size` entries in `(size + 7) // 8` bytes, and the operations a selection needs."""

    __slots__ = ("data", "size")

    def __init__(self, data: Tensor, size: int) -> None:
        if data.dtype != torch.uint8 or data.dim() != 1 or data.numel() != (size + 7) // 8:
            raise ValueError(f"a packed mask of {size} entries is {(size + 7) // 8} uint8 bytes, got "
                             f"{tuple(data.shape)} {data.dtype}")
        self.data, self.size = data, int(size)

    @classmethod
    def pack(cls, mask: Tensor) -> PackedMask:
        _check_byte_order()
        size = mask.numel()
        data = torch.empty((size + 7) // 8, dtype=torch.uint8)
        for start in range(0, size, _PART):
            part = mask[start : start + _PART]
            if part.numel() % 8:
                part = torch.cat([part, part.new_zeros(8 - part.numel() % 8)])
            words = part.contiguous().view(torch.uint8).view(torch.int64)  # eight 0/1 bytes per word
            data[start // 8 : start // 8 + words.numel()] = ((words * _GATHER) >> 56) & 0xFF
        return cls(data, size)

    def part(self, start: int, end: int) -> Tensor:
        """Entries start .. end - 1 as a bool tensor."""
        _check_byte_order()
        first, offset = divmod(start, 8)
        words = self.data[first : (end + 7) // 8].to(torch.int64) * _SPREAD
        words &= _BIT_OF_BYTE
        return words.view(torch.uint8).view(-1).ne(0)[offset : offset + end - start]

    def positions(self, start: int, end: int, dtype: torch.dtype) -> Tensor:
        """Ascending positions of the set entries in start .. end - 1, as `dtype`."""
        return torch.nonzero(self.part(start, end)).squeeze(1).to(dtype).add_(start)

    def parts(self, chunk: int = _PART):
        """(start, entries start .. start + len - 1) in order, `chunk` at a time."""
        for start in range(0, self.size, chunk):
            yield start, self.part(start, min(self.size, start + chunk))

    def count(self, start: int = 0, end: int | None = None) -> int:
        """Set entries in start .. end - 1: whole bytes by a table of their bit counts, ragged ends bit by bit."""
        end = self.size if end is None else end
        first, last = -(-start // 8), end // 8  # the whole bytes inside the range
        if first >= last:
            return int(torch.count_nonzero(self.part(start, end)))
        whole = sum(int(_BIT_COUNTS.index_select(0, self.data[at : min(last, at + _PART)].int()).sum())
                    for at in range(first, last, _PART))
        return whole + int(torch.count_nonzero(self.part(start, 8 * first))) + int(
            torch.count_nonzero(self.part(8 * last, end)))

    def lookup(self, indices: Tensor) -> Tensor:
        """Entries at `indices`, on the device the mask and the indices share (no host round trip)."""
        byte = self.data[indices >> 3]
        return ((byte >> (indices & 7).to(torch.uint8)) & 1).bool()

    def to(self, device: torch.device | str) -> PackedMask:
        return PackedMask(self.data.to(device), self.size)


_BIT_COUNTS = torch.tensor([bin(byte).count("1") for byte in range(256)], dtype=torch.int32)

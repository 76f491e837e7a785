"""Label Studio's brush RLE: the run-length code its brush tool stores masks in, written from its specification.

    rle = encode(mask)                  # H x W bool -> list of byte values (the `rle` field of a brushlabels value)
    mask = decode(rle, height, width)   # the inverse; also reads what Label Studio's own editor writes
                                        # (ValueError before any allocation when the header does not fit the image)

The code covers the mask as an RGBA image, flattened row-major (every pixel's value four times, 255 inside).
Bits, most significant first: the value count (32 bits), the word size minus one (5 bits), four run-length field
widths minus one (4 bits each), then blocks until the count is covered: 1 bit (1: one value repeated, 0: literal
values), 2 bits choosing one of the four widths, the block's length minus one in that many bits, then the one
repeated word or that many words. The end is padded with zeros to a whole byte. This encoder writes 8-bit words
and widths 3, 4, 8 and 16, byte for byte what label-studio-sdk's `mask2rle` writes (tested against the SDK).

Why not the SDK's own `decode_rle` (tests/test_label_studio.py decodes every code both ways and compares): it
expands the code into a Python list of one-character strings, about 72 bytes of memory per bit, and takes 2.4x
this decoder's time; and it allocates whatever value count a header claims (2**31 from a 110 KB code). `decode`
reads the header first and refuses a count that is not the image's (H x W x 4) or a code longer than
`MAX_RLE_BYTES` before anything is allocated; the Label Studio backend calls it in a worker thread.
"""

from __future__ import annotations

import numpy as np

WIDTHS = (3, 4, 8, 16)
_LONGEST = 1 << WIDTHS[-1]
#: Longest brush RLE decoded (one region): a brush stroke of a 40 MP image codes in kilobytes; a code this long is
#: a noise-like mask that would take seconds of a worker thread.
MAX_RLE_BYTES = 4 << 20
_HEADER_BITS = 32 + 5 + 4 * 4


def encode(mask: np.ndarray) -> list[int]:
    """A H x W mask (bool, or values 0..255) as Label Studio brush RLE (a list of ints 0..255)."""
    values = np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8) if mask.dtype == bool \
        else np.asarray(mask, dtype=np.uint8)
    flat = values.ravel()
    count = flat.size * 4
    parts = [f"{count:032b}", f"{8 - 1:05b}", "".join(f"{w - 1:04b}" for w in WIDTHS)]
    if flat.size:
        starts = np.flatnonzero(np.concatenate([[True], flat[1:] != flat[:-1]]))
        lengths = np.diff(np.concatenate([starts, [flat.size]])) * 4
        for start, length in zip(starts.tolist(), lengths.tolist()):
            parts.append(_run(length, f"{int(flat[start]):08b}"))
    bits = "".join(parts)
    bits += "0" * (8 - len(bits) % 8)  # 1 to 8 zeros, as label-studio-sdk pads (so the bytes are its bytes)
    return np.packbits(np.frombuffer(bits.encode(), dtype=np.uint8) - ord("0")).tolist()


def _run(length: int, word: str) -> str:
    """One run of `length` equal values: the narrowest width that holds it; a run past 256 values in 16-bit
    blocks (a last short one too), as label-studio-sdk's encoder writes them."""
    if length == 1:
        return f"0000{word}"  # a literal block of one value
    for index, width in enumerate(WIDTHS[:-1]):
        if length <= 1 << width:
            return f"1{index:02b}{length - 1:0{width}b}{word}"
    blocks = []
    while length > _LONGEST:
        blocks.append(f"111{_LONGEST - 1:016b}{word}")
        length -= _LONGEST
    blocks.append(f"111{length - 1:016b}{word}")
    return "".join(blocks)


class _Bits:
    def __init__(self, data: bytes):
        self.text = "".join(f"{b:08b}" for b in data)
        self.at = 0

    def read(self, n: int) -> int:
        if self.at + n > len(self.text):
            raise ValueError("brush RLE ends in the middle of a block")
        value = int(self.text[self.at:self.at + n], 2) if n else 0
        self.at += n
        return value


def header(rle) -> tuple[bytes, int]:
    """(the code's bytes, the value count its header claims), read without decoding; ValueError for a code that
    is not a list of bytes, is longer than MAX_RLE_BYTES or shorter than its header."""
    if isinstance(rle, (list, tuple)) and len(rle) > MAX_RLE_BYTES:
        raise ValueError(f"brush RLE of {len(rle):,} bytes; at most {MAX_RLE_BYTES:,} are decoded")
    try:
        data = bytes(rle)
    except (TypeError, ValueError):
        raise ValueError("brush RLE must be a list of byte values 0..255") from None
    if len(data) > MAX_RLE_BYTES:
        raise ValueError(f"brush RLE of {len(data):,} bytes; at most {MAX_RLE_BYTES:,} are decoded")
    if len(data) * 8 < _HEADER_BITS:
        raise ValueError("brush RLE ends in the middle of a block")
    return data, int.from_bytes(data[:4], "big")


def decode_values(rle, expected: int | None = None) -> np.ndarray:
    """Brush RLE -> the flat uint8 RGBA values it codes; ValueError (before allocating them) when its header
    claims another count than `expected`, or more values than its bytes can code."""
    data, count = header(rle)
    if expected is not None and count != expected:
        raise ValueError(f"brush RLE holds {count} values; expected {expected}")
    if count > 8 * len(data) * (1 << 16):  # more values than the bytes can code: a corrupt header
        raise ValueError(f"brush RLE header claims {count} values for {len(data)} bytes")
    bits = _Bits(data)
    bits.read(32)
    word = bits.read(5) + 1
    widths = [bits.read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint8)
    i = 0
    while i < count:
        repeated = bits.read(1)
        end = min(count, i + 1 + bits.read(widths[bits.read(2)]))
        if repeated:
            out[i:end] = bits.read(word)
        else:
            for k in range(i, end):
                out[k] = bits.read(word)
        i = end
    return out


def decode(rle, height: int, width: int) -> np.ndarray:
    """Brush RLE of a `height` x `width` image -> H x W bool mask (its alpha channel above zero)."""
    expected = height * width * 4
    _, count = header(rle)
    if count != expected:
        raise ValueError(f"brush RLE holds {count} values; a {width}x{height} RGBA mask has {expected}")
    values = decode_values(rle, expected)
    return values.reshape(height, width, 4)[:, :, 3] > 0

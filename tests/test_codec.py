"""The one codec/io layer: every front end decodes, encodes, parses and quotes through `samcl.io`, with its
limits passed as arguments (the server's stricter ones included)."""

from __future__ import annotations

import argparse
import io

import numpy as np
import pytest
from PIL import Image

from samcl import Prompt, PromptError, SamclError
from samcl.io import ImageTooLarge, encode_image, parse_json, quote, read_image, read_mask


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_one_decoder_reads_a_path_and_bytes_alike_and_refuses_above_the_given_limit(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(_png(image))
    assert np.array_equal(read_image(tmp_path / "a.png"), image)
    assert np.array_equal(read_image(_png(image)), image)
    with pytest.raises(ImageTooLarge, match=r"a\.png: image of 30x20 pixels.*limit of 0\.0005 megapixels"):
        read_image(tmp_path / "a.png", max_pixels=500)
    with pytest.raises(ImageTooLarge, match=r"^image of 30x20 pixels"):
        read_image(_png(image), max_pixels=500)
    with pytest.raises(SamclError, match="not a readable image"):
        read_image(b"not an image")


def test_one_encoder_writes_masks_as_0_255_and_pictures_as_they_are(tmp_path):
    mask = np.zeros((8, 9), bool)
    mask[2:5, 3:7] = True
    (tmp_path / "m.png").write_bytes(encode_image(mask))
    assert np.array_equal(read_mask(tmp_path / "m.png"), mask)
    assert np.asarray(Image.open(io.BytesIO(encode_image(mask)))).max() == 255
    picture = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    for format in ("PNG", "BMP", "TIFF", "WEBP"):  # lossless, every one
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_image(picture, format)))), picture)


def test_one_json_parser_takes_a_stricter_depth_from_the_server():
    from samcl.serve.errors import ApiError
    from samcl.serve.intake import parse_json as parse_body

    forty = "[" * 40 + "]" * 40
    assert parse_json(forty, "file") == parse_json(forty.encode(), "file")  # 64 levels for files
    with pytest.raises(ApiError, match="nested 40 levels deep; at most 32") as refused:
        parse_body(forty.encode())
    assert refused.value.status == 422
    with pytest.raises(SamclError, match=r"^f\.json: malformed JSON"):
        parse_json(b"{", "f.json")


def test_quote_bounds_long_strings_and_nested_containers():
    assert quote("abc") == "'abc'"
    assert len(quote("x" * 10_000)) == 64 and quote("x" * 10_000).endswith("…")
    assert len(quote("x" * 10_000, 120)) == 120
    shared = [1]
    for _ in range(1000):
        shared = [shared, shared]
    assert len(quote(shared)) <= 64


def test_box_order_is_one_check_for_the_flag_type_and_the_prompt():
    from samcl.cli import flags

    with pytest.raises(PromptError, match=r"box 5,5,1,9: needs x0 <= x1 and y0 <= y1") as refused:
        Prompt.check_box([5, 5, 1, 9])
    assert refused.value.code == "bad_box"
    with pytest.raises(PromptError, match="needs x0 <= x1"):
        Prompt.of(box=[5, 5, 1, 9]).check(100, 100)
    with pytest.raises(argparse.ArgumentTypeError, match=r"box 5,5,1,9: needs x0 <= x1 and y0 <= y1"):
        flags.box("5,5,1,9")
    assert flags.box("1,2,3,4") == (1.0, 2.0, 3.0, 4.0)

"""`samcl track` with several objects (VALUE:ID prompts) and directions, as a user runs it (tests/test_video.py
builds the random tiny SAM 2 checkpoint and its store)."""

from __future__ import annotations

import json
import re

import pytest
from test_video import FRAMES, _write_frames, frames, meta, store_on_checkpoint  # noqa: F401

from samcl.cli import main


def _track(store, folder, out, *flags):
    return main(["track", str(store), str(folder), *flags, "--out", str(out), "--json"])


def test_two_objects_from_the_command_line_each_get_their_masks(store_on_checkpoint, frames, tmp_path, capsys):
    folder = _write_frames(tmp_path / "frames", frames)
    code = _track(store_on_checkpoint, folder, tmp_path / "out", "--point", "40,30", "--negative", "5,5",
                  "--box", "60,40,104,90:7", "--point", "80,70:7", "--frame", "1")
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["objects"] == [1, 7] and report["direction"] == "forward"
    assert [sorted(row["objects"]) for row in report["frames"]] == [[]] + [["1", "7"]] * (FRAMES - 1)
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names == sorted(f"{t:05d}_{obj}.png" for t in range(1, FRAMES) for obj in (1, 7))


def test_the_cli_objects_are_the_python_apis(store_on_checkpoint, frames, tmp_path, capsys):
    """The masks written for `--point 40,30 --box ...:7` are SAMCL.track's for the same two prompts."""
    import numpy as np

    from samcl import SAMCL, Prompt
    from samcl.io import read_mask

    folder = _write_frames(tmp_path / "frames", frames)
    assert _track(store_on_checkpoint, folder, tmp_path / "out", "--point", "40,30", "--box", "60,40,104,90:7",
                  "--force", "base") == 0
    prompts = {0: {1: Prompt.of(points=[[40, 30]]), 7: Prompt.of(box=[60, 40, 104, 90])}}
    samcl = SAMCL.open(store_on_checkpoint, device="cpu")
    for frame in samcl.track(iter(frames), prompts, force="base", num_frames=FRAMES):
        for obj, result in frame.objects.items():
            assert np.array_equal(read_mask(tmp_path / "out" / f"{frame.index:05d}_{obj}.png") > 0, result.mask)


@pytest.mark.parametrize("direction, tracked", [("reverse", range(0, 4)), ("both", range(FRAMES))])
def test_directions_give_masks_before_the_prompted_frame(direction, tracked, store_on_checkpoint, frames, tmp_path,
                                                         capsys):
    folder = _write_frames(tmp_path / "frames", frames)
    assert _track(store_on_checkpoint, folder, tmp_path / "out", "--point", "40,30", "--frame", "3",
                  "--direction", direction) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["frame"] for row in report["frames"]] == list(tracked)  # sorted, though run backwards
    assert all(row["objects"] for row in report["frames"])
    assert len(list((tmp_path / "out").glob("*_1.png"))) == len(tracked)


@pytest.mark.parametrize("flags, message", [
    (["--point", "1,1:x"], r"--point: .*object id must be an integer from 1, got 'x'"),
    (["--point", "1,1:0"], r"--point: .*object id must be an integer from 1"),
    (["--box", "1,1,5,5", "--box", "2,2,6,6"], r"--box: object 1 has two boxes"),
    (["--direction", "sideways"], r"--direction: invalid choice"),
    ([], r"no prompt"),
])
def test_bad_object_flags_are_one_line_exit_2(flags, message, frames, tmp_path, capsys):
    folder = _write_frames(tmp_path / "frames", frames)
    code = main(["track", str(tmp_path / "store"), str(folder), *flags, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(message, err[0]), err

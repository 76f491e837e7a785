"""`samcl track` with several objects on several frames (VALUE:ID@FRAME prompts) and directions, as a user runs
it (tests/test_video.py builds the random tiny SAM 2 checkpoint and its store)."""

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
    (["--box", "1,1,5,5", "--box", "2,2,6,6"], r"--box 2,2,6,6: object 1 has two boxes on frame 0"),
    (["--box", "1,1,5,5:2@3", "--box", "2,2,6,6:2@3"], r"--box 2,2,6,6:2@3: object 2 has two boxes on frame 3"),
    (["--point", "1,1@x"], r"--point: .*the frame must be an integer from 0, got 'x'"),
    (["--point", "1,1@-1"], r"--point: .*the frame must be an integer from 0, got '-1'"),
    (["--point", "1,1@2:3"], r"--point: .*the frame must be an integer from 0, got '2:3' \(the :ID comes before"),
    (["--point", "1,1:2@9"], r"--point 1,1:2@9: frame 9 is past the last frame of .*frames \(8 frames: 0..7\)"),
    (["--point", "1,1", "--frame", "8"], r"--frame 8: frame 8 is past the last frame of .*\(8 frames: 0..7\)"),
    (["--direction", "sideways"], r"--direction: invalid choice"),
    ([], r"no prompt"),
])
def test_bad_prompt_flags_are_one_line_exit_2(flags, message, frames, tmp_path, capsys):
    folder = _write_frames(tmp_path / "frames", frames)
    code = main(["track", str(tmp_path / "store"), str(folder), *flags, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(message, err[0]), err


def test_objects_prompted_on_different_frames_are_the_python_apis(store_on_checkpoint, frames, tmp_path, capsys):
    """`--point 40,30@1 --box ...:7@3 --point ...:7@5` is SAMCL.track with {1: {1: ...}, 3: {7: ...}, 5: {7: ...}}:
    object 7 has masks from frame 1 on (its prompted frames are in its memory from the start, as Meta's offline
    propagate_in_video has them), and its second prompt adds to its track."""
    import numpy as np

    from samcl import SAMCL, Prompt
    from samcl.io import read_mask

    folder = _write_frames(tmp_path / "frames", frames)
    assert _track(store_on_checkpoint, folder, tmp_path / "out", "--point", "40,30@1", "--box", "60,40,104,90:7@3",
                  "--point", "90,80:7@5", "--force", "base") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prompted_frame"] == 1 and report["prompted_frames"] == {"1": [1], "3": [7], "5": [7]}
    assert [sorted(row["objects"]) for row in report["frames"]] == [[]] + [["1", "7"]] * (FRAMES - 1)
    prompts = {1: {1: Prompt.of(points=[[40, 30]])}, 3: {7: Prompt.of(box=[60, 40, 104, 90])},
               5: {7: Prompt.of(points=[[90, 80]])}}
    samcl = SAMCL.open(store_on_checkpoint, device="cpu")
    compared = 0
    for frame in samcl.track(iter(frames), prompts, force="base", num_frames=FRAMES):
        for obj, result in frame.objects.items():
            assert np.array_equal(read_mask(tmp_path / "out" / f"{frame.index:05d}_{obj}.png") > 0, result.mask)
            compared += 1
    assert compared == 2 * FRAMES - 2


@pytest.mark.parametrize("direction, tracked", [("reverse", range(0, 7)), ("both", range(FRAMES))])
def test_per_frame_prompts_run_back_from_the_last_or_the_first(direction, tracked, store_on_checkpoint, frames,
                                                              tmp_path, capsys):
    """One object prompted on frames 2 and 6 (a box on each): reverse runs from 6 down, both from 2 both ways."""
    folder = _write_frames(tmp_path / "frames", frames)
    assert _track(store_on_checkpoint, folder, tmp_path / "out", "--box", "20,20,60,60@2", "--box", "30,30,70,70@6",
                  "--point", "40,40@6", "--direction", direction) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prompted_frames"] == {"2": [1], "6": [1]}
    assert [row["frame"] for row in report["frames"]] == list(tracked)
    assert all(row["objects"] for row in report["frames"])


def _written(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else None


def test_a_prompt_past_a_video_of_unsaid_length_is_found_when_read_and_leaves_no_masks(
        store_on_checkpoint, frames, tmp_path, capsys, monkeypatch):
    """A container that does not say its frame count: the frame past its end shows once the video is read (read
    ahead to the last prompted frame before any frame is tracked), in one line that says so, and no mask is left
    (--out is as it was: here, not made)."""
    import samcl.io

    opened = samcl.io.open_frames

    def unsaid(path):
        video = opened(path)
        video.count = None
        return video

    monkeypatch.setattr(samcl.io, "open_frames", unsaid)
    folder = _write_frames(tmp_path / "frames", frames)
    code = main(["track", str(store_on_checkpoint), str(folder), "--point", "40,30", "--point", "9,9:2@11",
                 "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.splitlines()
    err = [line for line in lines if not line.startswith("samcl: track: ")]
    assert code == 2 and len(err) == 1, err  # after the progress lines, which say it stopped (not "done")
    assert lines[-2].startswith("samcl: track: stopped, 0 frame in "), lines
    assert re.search(r"frame 11 .* is past the last frame of .*: it has 8 frames \(0..7\), known only once the "
                     r"video was read", err[0]), err
    assert _written(tmp_path / "out") is None


def test_an_interrupted_track_removes_its_masks_and_keeps_the_folder(store_on_checkpoint, frames, tmp_path, capsys,
                                                                     monkeypatch):
    """Ctrl-C (KeyboardInterrupt) after some frames: exit 130, no mask and no temporary file left; an --out that
    existed (with a file of the user's) stays as it was."""
    from samcl.inference.video import VideoTracker

    step = VideoTracker.step
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(VideoTracker, "step", interrupted)
    folder = _write_frames(tmp_path / "frames", frames)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = main(["track", str(store_on_checkpoint), str(folder), "--point", "40,30", "--out", str(out)])
    assert code == 130 and len(calls) == 4
    assert _written(out) == ["notes.txt"]


def test_an_out_below_a_file_is_refused_before_the_model_loads(frames, tmp_path, capsys):
    folder = _write_frames(tmp_path / "frames", frames)
    (tmp_path / "afile").write_text("")
    code = main(["track", str(tmp_path / "no-store"), str(folder), "--point", "1,1", "--out",
                 str(tmp_path / "afile" / "masks")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(r"masks: .*afile is a file, not a folder", err[0]), err


def test_a_prompt_outside_its_frame_is_refused_before_the_model_loads(frames, tmp_path, capsys):
    """The prompted frame's size is read first (a folder's image; a video's stream): no store is even opened."""
    folder = _write_frames(tmp_path / "frames", frames)
    code = main(["track", str(tmp_path / "no-store"), str(folder), "--point", "5,5", "--point", "500,1:4@5",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert re.search(r"frame 5, object 4: point 500,1 lies outside the 112x96 image", err[0]), err
    assert _written(tmp_path / "out") is None


def test_both_ways_an_object_prompted_later_has_masks_on_every_frame(store_on_checkpoint, frames, tmp_path, capsys):
    """Object 2, first prompted on frame 5, has masks on every frame, 2..4 included (README: its prompted frame is
    in its memory from the start, as Meta's offline predictor has it)."""
    folder = _write_frames(tmp_path / "frames", frames)
    assert _track(store_on_checkpoint, folder, tmp_path / "out", "--point", "40,30@2", "--point", "80,70:2@5",
                  "--direction", "both") == 0
    report = json.loads(capsys.readouterr().out)
    assert [sorted(row["objects"]) for row in report["frames"]] == [["1", "2"]] * FRAMES

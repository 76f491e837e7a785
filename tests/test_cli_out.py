"""Files the command writes and the Unix manners around them: --out never replaces a device, fifo or symlink
and writes the format its extension names; new files follow the umask; a closed pipe ends quietly; Ctrl-C's
message has a line of its own; problems are found before the work starts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import tiny_sam_config
from helpers import one_error_line, write_domain
from PIL import Image

from samcl.backbone import SamBackbone
from samcl.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    SamBackbone.from_config(tiny_sam_config(), seed=0).model.save_pretrained(root / "tiny-sam")
    write_domain(root / "red", (200, 30, 30), seed=0, n_train=4, n_test=2)
    assert main(["learn", root / "store", "--base", root / "tiny-sam", "--domain", "red", "--data", root / "red",
                 "--epochs", "1", "--samples-per-domain", "4", "--json"]) == 0
    return root


def image_of(ws) -> Path:
    return ws / "red" / "test" / "images" / "img000.png"


def segment(ws, out, *extra) -> list:
    return ["segment", ws / "store", image_of(ws), "--point", "40,20", "--out", out, *extra]


def one_error(capsys, argv, *names) -> str:
    return one_error_line(main([str(a) for a in argv]), capsys.readouterr().err, names)


def test_symlinked_out_is_written_through_and_stays_a_link(ws, tmp_path, capsys):
    target, link = tmp_path / "real.png", tmp_path / "link.png"
    target.write_bytes(b"old")
    link.symlink_to(target)
    assert main([str(a) for a in segment(ws, link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert Image.open(target).format == "PNG"


def test_fifo_out_is_written_through_not_replaced(ws, tmp_path, capsys):
    fifo = tmp_path / "mask.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert main([str(a) for a in segment(ws, fifo)]) == 0
    reader.join(30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and received[0].startswith(b"\x89PNG")


def test_character_device_out_is_written_through_not_replaced(ws, tmp_path, capsys):
    node = tmp_path / "null"  # a fresh node with /dev/null's numbers: the real /dev/null is never touched
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("creating a device node needs CAP_MKNOD")
    assert main([str(a) for a in segment(ws, node)]) == 0
    assert stat.S_ISCHR(os.stat(node).st_mode)


def test_out_extension_names_the_format_or_is_refused(ws, tmp_path, capsys):
    assert main([str(a) for a in segment(ws, tmp_path / "m.bmp")]) == 0
    assert Image.open(tmp_path / "m.bmp").format == "BMP"
    assert main([str(a) for a in segment(ws, tmp_path / "m.tif")]) == 0
    assert Image.open(tmp_path / "m.tif").format == "TIFF"
    assert "lossy" in one_error(capsys, segment(ws, tmp_path / "m.jpg"), tmp_path / "m.jpg")
    assert "names no mask format" in one_error(capsys, segment(ws, tmp_path / "mask"), tmp_path / "mask")
    assert not (tmp_path / "m.jpg").exists() and not (tmp_path / "mask").exists()


def test_same_stem_into_one_folder_is_refused(ws, tmp_path, capsys):
    other = tmp_path / "img000.jpg"
    Image.open(image_of(ws)).convert("RGB").save(other)
    line = one_error(capsys, ["segment", ws / "store", image_of(ws), other, "--point", "4,4", "--out",
                              tmp_path / "masks"], "img000.png", other)
    assert "would both be written" in line and not (tmp_path / "masks").exists()


def test_out_dash_writes_png_to_stdout(ws, tmp_path):
    result = subprocess.run([sys.executable, "-m", "samcl.cli", *map(str, segment(ws, "-"))], capture_output=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith(b"\x89PNG"), result.stderr
    assert b"img000.png" in result.stderr  # the table goes to stderr, the mask alone to stdout


def test_new_files_follow_the_umask(ws, tmp_path, capsys):
    old = os.umask(0o002)
    try:
        assert main([str(a) for a in segment(ws, tmp_path / "m.png")]) == 0
        assert main(["learn", str(tmp_path / "s"), "--base", str(ws / "tiny-sam"), "--domain", "red", "--data",
                     str(ws / "red"), "--epochs", "1", "--samples-per-domain", "4", "--json"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.png").st_mode) == 0o664
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "s").rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o664}, modes


def test_closed_stdout_ends_quietly_like_unix_tools(ws):
    process = subprocess.Popen([sys.executable, "-m", "samcl.cli", "info", str(ws / "store")], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # before the command writes anything: `samcl info S | head -0`
    err = process.stderr.read()
    assert process.wait(120) == 141 and err == b"", err


def test_unencodable_output_is_escaped_not_fatal(ws, tmp_path):
    store = tmp_path / "sätze"
    store.symlink_to(ws / "store")
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    result = subprocess.run([sys.executable, "-m", "samcl.cli", "info", str(store)], capture_output=True,
                            cwd=REPO, env=env, timeout=120)
    assert result.returncode == 0 and b"s\\xe4tze" in result.stdout, result.stderr


def test_interrupt_message_is_on_its_own_line(monkeypatch, capsys):
    from tqdm.auto import tqdm

    from samcl.cli import commands

    def interrupted(args):
        bar = tqdm(total=10, desc="learn x", file=sys.stderr)
        bar.update(3)
        raise KeyboardInterrupt

    monkeypatch.setitem(commands.COMMANDS, "info", interrupted)
    assert main(["info", "S"]) == 130
    err = capsys.readouterr().err
    assert "\nsamcl: interrupted" in err and err.rstrip().splitlines()[-1].startswith("samcl: interrupted")


def test_fail_early_before_any_work(ws, tmp_path, capsys):
    fifo = tmp_path / "in.png"
    os.mkfifo(fifo)
    one_error(capsys, ["segment", ws / "store", fifo, "--point", "1,1", "--out", tmp_path / "m.png"], fifo, "fifo")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    one_error(capsys, ["learn", dangling, "--domain", "x", "--data", ws / "red"], dangling, "does not exist")
    afile = tmp_path / "data.txt"
    afile.write_text("x")
    one_error(capsys, ["learn", tmp_path / "s", "--domain", "x", "--data", afile], afile, "is a file")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the demo's folder should go")
    one_error(capsys, ["demo", "--quick", "--out", blocked / "out"], blocked)


def test_unsupported_image_type_is_named(ws, tmp_path, capsys):
    import shutil

    data = Path(shutil.copytree(ws / "red" / "train", tmp_path / "data"))
    (data / "images" / "img000.png").rename(data / "images" / "img000.xcf")
    one_error(capsys, ["learn", tmp_path / "s", "--domain", "x", "--data", data], "img000.xcf", "not a supported")

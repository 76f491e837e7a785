"""forget and merge: a set that forgot a domain routes and segments like one that never learned it; a merge of
sets learned apart like one set that learned them all; both commit crash-safely and refuse what they cannot do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import toy_samples

from samcl import SAMCL, Prompt, SamclError, SelectorConfig, TrainConfig, forget, merge
from samcl.store import ModuleStore
from samcl.cli.errors import error_line

FAST = TrainConfig(epochs=1, batch_size=2, progress=False)
COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 200, 30)}
ROOT = Path(__file__).resolve().parent.parent


def learned(path: Path, backbone, names, kind: str = "fecam") -> SAMCL:
    samcl = SAMCL.create(backbone, path, selector=SelectorConfig(kind=kind, samples_per_domain=8, epochs=40))
    for name in names:
        samcl.learn(name, toy_samples(8, COLOURS[name], seed=len(name)), FAST)
    return samcl


def outputs(path: Path, backbone) -> list:
    """Routing and masks of every colour's test images."""
    samcl = SAMCL.open(path, base=backbone)
    out = []
    for colour in COLOURS.values():
        samples = toy_samples(3, colour, seed=99)
        results = samcl.segment([s.image for s in samples], [Prompt.of(s.points) for s in samples])
        out += [(r.domain, r.masks.tobytes(), round(float(r.scores[0]), 5)) for r in results]
    return out


def selector_tensors(path: Path) -> dict:
    return ModuleStore(path).load().selector.to_tensors()


def test_forget_equals_never_learning_it(tmp_path, tiny_backbone):
    learned(tmp_path / "three", tiny_backbone, ["red", "blue", "green"])
    learned(tmp_path / "two", tiny_backbone, ["red", "green"])
    report = forget(tmp_path / "three", "blue")
    assert report["domains"] == ["red", "green"] and not report["selector_retrained"]
    assert not any("blue" in p.name for p in (tmp_path / "three").rglob("*"))  # its module file is gone
    got, want = selector_tensors(tmp_path / "three"), selector_tensors(tmp_path / "two")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert outputs(tmp_path / "three", tiny_backbone) == outputs(tmp_path / "two", tiny_backbone)


def test_forget_with_the_mlp_retrains_from_scratch_on_the_remaining_rows(tmp_path, tiny_backbone):
    samcl = learned(tmp_path / "s", tiny_backbone, ["red", "blue", "green"], kind="mlp")
    before = samcl.module_set.buffer
    keep = before.labels != 1
    report = forget(tmp_path / "s", "blue")
    assert report["selector_retrained"] and report["seed"] == 0
    after = ModuleStore(tmp_path / "s").load().selector
    assert torch.equal(after.buffer.features, before.features[keep])  # no row of blue's images is left
    assert after.buffer.labels.tolist() == [0] * 8 + [1] * 8
    expected = ModuleStore(tmp_path / "s").load().selector
    torch.manual_seed(1234)  # whatever the global RNG holds: the retrain draws its initial weights from the seed
    expected.retrain(2, seed=0)  # a from-scratch retrain on that buffer
    assert all(torch.equal(a, b) for a, b in zip(after.to_tensors().values(), expected.to_tensors().values()))


def test_forget_refuses_what_it_cannot_do_and_changes_nothing(tmp_path, tiny_backbone):
    learned(tmp_path / "s", tiny_backbone, ["red"])
    files = {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    for domain, message in [("nope", "no domain 'nope'"), ("base", "the base model itself cannot be forgotten"),
                            ("red", "the set's only domain")]:
        with pytest.raises(SamclError, match=message):
            forget(tmp_path / "s", domain)
    assert {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()} == files


def test_merge_equals_one_set_that_learned_everything(tmp_path, tiny_backbone):
    learned(tmp_path / "a", tiny_backbone, ["red", "blue"])
    learned(tmp_path / "b", tiny_backbone, ["green"])
    learned(tmp_path / "all", tiny_backbone, ["red", "blue", "green"])
    report = merge(tmp_path / "both", [tmp_path / "a", tmp_path / "b"])
    assert report["domains"] == ["red", "blue", "green"]
    merged, everything = ModuleStore(tmp_path / "both").load(), ModuleStore(tmp_path / "all").load()
    for name in ("red", "blue", "green"):  # modules copied tensor for tensor
        for key, tensor in everything.modules[name].state_tensors().items():
            assert torch.equal(merged.modules[name].state_tensors()[key], tensor)
    assert outputs(tmp_path / "both", tiny_backbone) == outputs(tmp_path / "all", tiny_backbone)


def test_merge_refuses_clashes_unless_renamed_and_other_configurations(tmp_path, tiny_backbone):
    learned(tmp_path / "a", tiny_backbone, ["red"])
    learned(tmp_path / "b", tiny_backbone, ["red"])
    with pytest.raises(SamclError, match=r"rename 'red=NEW'") as refused:  # the library's own terms
        merge(tmp_path / "out", [tmp_path / "a", tmp_path / "b"])
    assert error_line(refused.value).endswith("--rename red=NEW")  # what `samcl merge` prints: its flag
    assert not (tmp_path / "out").exists()
    assert merge(tmp_path / "out", [tmp_path / "a", tmp_path / "b"], rename={"red": "red-b"})["domains"] == ["red", "red-b"]
    learned(tmp_path / "mlp", tiny_backbone, ["blue"], kind="mlp")
    with pytest.raises(SamclError, match="another selector kind"):
        merge(tmp_path / "out2", [tmp_path / "a", tmp_path / "mlp"])
    with pytest.raises(SamclError, match="already exists"):
        merge(tmp_path / "out", [tmp_path / "a", tmp_path / "b"], rename={"red": "x"})


def test_cli_forget_and_merge(tmp_path, tiny_backbone, capsys):
    from samcl.cli import main

    learned(tmp_path / "s", tiny_backbone, ["red", "blue"])
    assert main(["forget", str(tmp_path / "s"), "blue"]) == 0
    assert "forgot blue" in capsys.readouterr().out
    assert main(["forget", str(tmp_path / "s"), "blue"]) == 2
    assert "no domain 'blue'" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "m"), str(tmp_path / "s"), "--rename", "bad"]) == 2
    capsys.readouterr()
    learned(tmp_path / "t", tiny_backbone, ["red"])
    assert main(["merge", str(tmp_path / "m"), str(tmp_path / "s"), str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err  # the library's error, in the command's terms
    assert "--rename red=NEW" in err and "rename={" not in err


def test_sigkill_during_forget_leaves_the_old_set_or_the_new_one(tmp_path, tiny_backbone):
    learned(tmp_path / "s", tiny_backbone, ["red", "blue", "green"])
    env = {**os.environ, "SAMCL_FAULT_DELAY": "0.4", "PYTHONPATH": str(ROOT)}
    outcomes = set()
    for marker in ("save: wrote selector", "save: wrote manifest.json"):
        process = subprocess.Popen([sys.executable, "-m", "samcl.cli", "forget", str(tmp_path / "s"), "blue"],
                                   stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        for line in process.stderr:
            if marker in line:
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=60)
        time.sleep(0.1)
        names = ModuleStore(tmp_path / "s").load().names  # checks every file's checksum
        assert names in (["red", "blue", "green"], ["red", "green"]), names
        outcomes.add(tuple(names))
        if names == ["red", "green"]:
            break
    assert ("red", "blue", "green") in outcomes  # the kill before the commit left the old set

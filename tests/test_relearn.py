"""Relearning a domain (`learn --replace`): the old module and selector state are replaced by the new ones in one
store generation, and a SIGKILL at any moment before that commit leaves the old set (the subprocess kills follow
tests/test_crash_safety.py: `benchmarks/kill_learn.py`'s harness, with the store's fault points announced)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from helpers import toy_samples
from test_crash_safety import kill_learn

from samcl import SAMCL, SamclError, SelectorConfig, TrainConfig
from samcl.cli import main
from samcl.store import ModuleStore
from samcl.cli.errors import error_line

FAST = TrainConfig(epochs=1, batch_size=2, progress=False)


def manifest_of(path):
    return json.loads((path / "manifest.json").read_text())


@pytest.mark.parametrize("kind", ["mlp", "ncm"])
def test_relearn_replaces_the_module_in_one_generation(tmp_path, tiny_backbone, kind):
    path = tmp_path / "store"
    samcl = SAMCL.create(tiny_backbone, path, selector=SelectorConfig(kind=kind, samples_per_domain=6, epochs=2))
    samcl.learn("red", toy_samples(6, (200, 30, 30), 0), FAST)
    samcl.learn("blue", toy_samples(6, (30, 30, 200), 1), FAST)
    before = manifest_of(path)
    old_blue = samcl.module_set.modules["blue"].state_tensors()
    samcl = SAMCL.open(path, base=tiny_backbone)
    report = samcl.learn("red", toy_samples(6, (180, 60, 20), 7), TrainConfig(epochs=1, batch_size=2, seed=3,
                                                                               progress=False), replace=True)
    after = manifest_of(path)
    assert report["replaced"] and after["generation"] == before["generation"] + 1
    assert sorted(d["name"] for d in after["domains"]) == ["blue", "red"] and len(after["domains"]) == 2
    old_red = next(d for d in before["domains"] if d["name"] == "red")
    new_red = next(d for d in after["domains"] if d["name"] == "red")
    assert new_red["file"] != old_red["file"] and new_red["sha256"] != old_red["sha256"]
    assert new_red["info"]["seed"] == 3
    assert not (path / old_red["file"]).exists()  # the replaced module's file went with the commit
    reopened = SAMCL.open(path, base=tiny_backbone)
    assert reopened.module_set.selector.num_domains == 2
    for key, value in reopened.module_set.modules["blue"].state_tensors().items():  # untouched domain
        assert torch.equal(value, old_blue[key])
    if kind == "mlp":  # the buffer holds N_e rows per domain, none of the old red's
        labels = reopened.module_set.buffer.labels
        assert len(labels) == 12 and sorted(labels.bincount().tolist()) == [6, 6]


def test_relearn_of_the_only_domain_and_its_refusals(tmp_path, tiny_backbone):
    path = tmp_path / "store"
    samcl = SAMCL.create(tiny_backbone, path, selector=SelectorConfig(samples_per_domain=4, epochs=2))
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), FAST)
    generation = manifest_of(path)["generation"]
    with pytest.raises(SamclError, match="already in the module set.*replace=True") as refused:
        samcl.learn("red", toy_samples(4, (200, 30, 30), 1), FAST)
    assert "relearn it with --replace)" in error_line(refused.value)  # what `samcl learn` prints
    with pytest.raises(SamclError, match="nothing to replace"):
        samcl.learn("green", toy_samples(4, (30, 170, 60), 1), FAST, replace=True)
    samcl.learn("red", toy_samples(4, (190, 40, 40), 2), FAST, replace=True)
    assert manifest_of(path)["generation"] == generation + 1
    assert SAMCL.open(path, base=tiny_backbone).domains == ["red"]


def test_cli_replace_flag(tmp_path):
    ws = kill_learn.prepare(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["learn", str(ws.store), "--base", str(ws.base), "--domain", "red", "--data",
                     str(ws.data["red"]), *kill_learn.LEARN_ARGS, *kill_learn.NEW_STORE_ARGS]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["learn", str(ws.store), "--domain", "red", "--data", str(ws.data["green"]), "--replace",
                     *kill_learn.LEARN_ARGS]) == 0
    assert out.getvalue().startswith("relearned 'red'")
    assert manifest_of(ws.store)["generation"] == 2
    assert main(["learn", str(ws.store), "--domain", "blue", "--data", str(ws.data["blue"]), "--replace"]) == 2


def test_sigkilled_relearn_leaves_the_old_set(tmp_path):
    """SIGKILL of `samcl learn --replace` while it trains and after it wrote the new module file: the manifest is
    byte-identical and the old set opens and segments; a kill after the manifest's rename has the relearned set."""
    ws = kill_learn.prepare(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        for domain in ("red", "blue"):
            extra = [] if ModuleStore(ws.store).exists() else ["--base", str(ws.base), *kill_learn.NEW_STORE_ARGS]
            assert main(["learn", str(ws.store), "--domain", domain, "--data", str(ws.data[domain]),
                         *kill_learn.LEARN_ARGS, *extra]) == 0
    from samcl import load_backbone

    verifier = kill_learn.Verifier(load_backbone(ws.base), ws.probe_image)
    command = [*kill_learn.learn_command(ws, "red", ws.data["green"]), "--replace"]
    for marker in (kill_learn.TRAIN_MARKER, "samcl-fault: save: wrote modules/",
                   "samcl-fault: save: wrote selector."):
        before = kill_learn.Snapshot.of(ws.store)
        run = kill_learn.Run(command, kill_learn.child_env(0.5))
        assert run.wait_marker(marker) is not None, run.text[-2000:]
        assert run.kill_at(0.0), f"{marker}: the relearn ended before the kill"
        state, _ = verifier.check(ws.store, before, "red")
        assert state == "previous", marker
        assert [d["name"] for d in manifest_of(ws.store)["domains"]] == ["red", "blue"]
    before = manifest_of(ws.store)
    run = kill_learn.Run(command, kill_learn.child_env(0.5))
    assert run.wait_marker("samcl-fault: save: wrote manifest.json") is not None
    assert run.kill_at(0.0)
    after = manifest_of(ws.store)
    assert after["generation"] == before["generation"] + 1
    assert [d["name"] for d in after["domains"]] == ["blue", "red"]
    assert after["domains"][0] == before["domains"][1]  # blue's entry unchanged
    assert after["domains"][1]["sha256"] != before["domains"][0]["sha256"]
    ModuleStore(ws.store).load(identity=verifier.identity)  # every file there and verified

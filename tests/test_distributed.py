"""Multi-process learning (torch.distributed, gloo on CPU): 2 processes x batch b must learn what 1 process x
batch 2b learns; only rank 0 writes the store; every rank ends with the same module set.

The workers are started with torch.multiprocessing and given the variables torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), then run `samcl learn` through the CLI: the same path as
`torchrun --nproc-per-node 2 -m samcl.cli learn ...` (the slow test runs the real torchrun). One start of the
workers serves the tests below (module fixture).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
from pathlib import Path

import pytest
import torch
from conftest import tiny_sam_config
from helpers import toy_samples, write_split

from samcl import SAMCL, SamclError, TrainConfig
from samcl.backbone import SamBackbone
from samcl.cli import main
from samcl.learning import distributed, train_module
from samcl.method import AugModule, config_for
from samcl.store import ModuleStore

WORLD = 2
BATCH = 2  # per process; the single-process reference uses WORLD x BATCH
TOLERANCE = 1e-5
# red: 8 samples, full global batches; blue: 3 samples, one short global batch split 2 + 1 across ranks
DOMAINS = {"red": ((200, 30, 30), 0, 8), "blue": ((30, 30, 200), 1, 3)}


def learn_args(store: Path, base: Path, data: Path, domain: str, batch_size: int) -> list[str]:
    return ["--device", "cpu", "learn", str(store), "--base", str(base), "--domain", domain,
            "--data", str(data / domain), "--epochs", "2", "--batch-size", str(batch_size), "--lr", "0.01",
            "--samples-per-domain", "6", "--selector-epochs", "3", "--selector", "mlp", "--json"]  # the buffer path


def state_hash(samcl: SAMCL) -> str:
    """Everything a rank holds after learning: modules, selector, buffer, domain entries."""
    state = samcl.module_set
    tensors = {f"module.{name}.{k}": v for name, m in state.modules.items() for k, v in m.state_tensors().items()}
    tensors.update({f"selector.{k}": v for k, v in state.selector.to_tensors().items() if v.is_floating_point()})
    if state.buffer is not None:  # the mlp's buffer (the statistics selectors keep none)
        tensors["buffer"] = state.buffer.features
    return distributed.tensors_sha256(tensors) + json.dumps([d.to_dict() for d in state.domains], sort_keys=True)


def worker(rank: int, port: int, root: Path) -> None:
    """One torchrun-like rank: learn both domains through the CLI, record what it wrote and what it holds."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import samcl.store.files

    writes, held = [], []
    for name in ("atomic_write_bytes", "atomic_write_json"):
        original = getattr(samcl.store.files, name)
        setattr(samcl.store.files, name,
                lambda path, *a, _f=original, **k: (writes.append(str(path)), _f(path, *a, **k)))
    learn, features_for, reused = SAMCL.learn, SAMCL.features_for, []
    SAMCL.learn = lambda self, *a, **k: (held.append(self), learn(self, *a, **k))[1]
    SAMCL.features_for = lambda self, samples, seed, known=None, *a, **k: (
        reused.append(sorted(known or {})), features_for(self, samples, seed, known, *a, **k))[1]
    out = io.StringIO()
    for domain in DOMAINS:
        with contextlib.redirect_stdout(out):
            code = main(learn_args(root / "two", root / "base", root / "data", domain, BATCH))
        if code != 0:
            raise RuntimeError(f"rank {rank}: samcl learn {domain} exited with {code}")
    (root / f"rank{rank}.json").write_text(json.dumps(
        {"writes": writes, "stdout": out.getvalue(), "state": state_hash(held[-1]), "reused": reused}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same two domains learned by 2 processes x BATCH and by 1 process x WORLD*BATCH (same seed)."""
    root = tmp_path_factory.mktemp("distributed")
    backbone = SamBackbone.from_config(tiny_sam_config(), seed=0)
    backbone.model.save_pretrained(root / "base")
    for domain, (background, seed, count) in DOMAINS.items():
        write_split(root / "data" / domain, toy_samples(count, background, seed))
    # fork: the workers skip re-importing torch and transformers (seconds each); they run single-threaded
    method = "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else "spawn"
    torch.multiprocessing.start_processes(worker, args=(free_port(), root), nprocs=WORLD, start_method=method)
    with contextlib.redirect_stdout(io.StringIO()):
        for domain in DOMAINS:
            assert main(learn_args(root / "one", root / "base", root / "data", domain, WORLD * BATCH)) == 0
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return root, ranks


def test_two_processes_learn_the_module_one_process_learns_with_the_global_batch(runs):
    root, _ = runs
    base = SamBackbone.from_pretrained(root / "base")
    one, two = SAMCL.open(root / "one", base=base, device="cpu"), SAMCL.open(root / "two", base=base, device="cpu")
    assert one.domains == two.domains == list(DOMAINS)
    for name in DOMAINS:
        expected, got = one.module_set.modules[name].state_tensors(), two.module_set.modules[name].state_tensors()
        worst = max((expected[k] - got[k]).abs().max().item() for k in expected)
        assert worst <= TOLERANCE, f"{name}: module differs by {worst}"
        initial = AugModule(one.aug_config, generator=torch.Generator().manual_seed(0)).state_tensors()
        moved = max((expected[k] - initial[k]).abs().max().item() for k in expected)
        assert moved > 100 * TOLERANCE  # training did change the module, so the comparison means something


def test_gathered_buffer_equals_the_single_process_buffer(runs):
    root, ranks = runs
    # rank 0 reuses the pooled features every rank computed during training (each pooled only its own shard)
    assert ranks[0]["reused"] == [list(range(count)) for _, _, count in DOMAINS.values()]
    one, two = ModuleStore(root / "one").load(), ModuleStore(root / "two").load()
    assert torch.equal(one.buffer.labels, two.buffer.labels)
    assert (one.buffer.features - two.buffer.features).abs().max().item() <= TOLERANCE


def test_losses_reported_are_the_global_batch_losses(runs):
    root, ranks = runs
    one = json.loads((root / "one" / "manifest.json").read_text())["domains"]
    two = json.loads((root / "two" / "manifest.json").read_text())["domains"]
    for a, b in zip(one, two):
        assert b["info"]["processes"] == WORLD and b["info"]["steps"] == a["info"]["steps"]
        assert b["info"]["loss_first"] == pytest.approx(a["info"]["loss_first"], rel=1e-5)


def test_only_rank_zero_writes_the_store_and_prints(runs):
    root, ranks = runs
    assert ranks[0]["writes"] and all(str(root / "two") in path for path in ranks[0]["writes"])
    assert all(not r["writes"] for r in ranks[1:])
    assert [json.loads(line)["domain"] for line in ranks[0]["stdout"].splitlines()] == list(DOMAINS)
    assert all(r["stdout"] == "" for r in ranks[1:])


def test_every_rank_holds_the_saved_module_set(runs):
    root, ranks = runs
    saved = SAMCL.open(root / "two", base=SamBackbone.from_pretrained(root / "base"), device="cpu")
    assert {r["state"] for r in ranks} == {state_hash(saved)}


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    for key in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    assert distributed.init("cpu") is None and distributed.current() is None


def test_a_fixed_gpu_under_torchrun_is_a_clear_error():
    with pytest.raises(SamclError, match="cuda:LOCAL_RANK"):
        distributed.resolve_device("cuda:1", local_rank=0)


def test_bf16_autocast_trains_float32_parameters_and_keeps_pooled_features_exact(tiny_backbone):
    samples = toy_samples(4, (200, 30, 30), 0)
    aug = config_for(tiny_backbone.site, rank=4)
    runs = {amp: train_module(tiny_backbone, aug, samples, tiny_backbone.default_selector_block,
                              TrainConfig(epochs=1, batch_size=2, progress=False, amp=amp), torch.device("cpu"))
            for amp in ("none", "bf16")}
    (plain, plain_stats, plain_pooled), (mixed, mixed_stats, mixed_pooled) = runs["none"], runs["bf16"]
    assert all(t.dtype == torch.float32 for t in mixed.state_tensors().values())
    assert mixed_stats["loss_first"] == pytest.approx(plain_stats["loss_first"], rel=1e-2)
    assert any(not torch.equal(t, mixed.state_tensors()[k]) for k, t in plain.state_tensors().items())
    assert all(torch.equal(plain_pooled[i], mixed_pooled[i]) for i in plain_pooled)  # prefix never autocast


def test_unknown_amp_mode_is_rejected():
    with pytest.raises(ValueError, match="amp 'fp8'"):
        TrainConfig(amp="fp8")


@pytest.mark.slow
def test_samcl_learn_runs_under_real_torchrun(tmp_path):
    """The real launcher, with the multi-node rendezvous arguments (one node here)."""
    import subprocess
    import sys

    SamBackbone.from_config(tiny_sam_config(), seed=0).model.save_pretrained(tmp_path / "base")
    write_split(tmp_path / "data" / "red", toy_samples(8, (200, 30, 30), 0))
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--node-rank", "0",
               "--nproc-per-node", str(WORLD), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
               "-m", "samcl.cli", *learn_args(tmp_path / "set", tmp_path / "base", tmp_path / "data", "red", BATCH)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)  # rank 0 alone prints
    assert report["stats"]["processes"] == WORLD and report["domains"] == ["red"]
    assert ModuleStore(tmp_path / "set").load().names == ["red"]

"""Resumable (method, seed) protocol runs. After every step a run's strategy state (safetensors + JSON; SAMCL as
a module store) and its results so far are written atomically to STATE/<method>/seed-<s>/ with progress.json;
a rerun of the same configuration (the fingerprint) skips what is done and continues from the last finished
step. Also the digest of the samcl sources every run records, and the base model a worker loads once."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .. import SamclError, __version__
from .._renamed import renamed_names
from ..io import atomic_write_json
from .executor import WorkerContext
from .methods import BenchmarkSize, make_strategy, strengths
from .protocol import ProtocolResult, run_protocol
from .suite import SuiteSpec

PROGRESS = "progress.json"


@lru_cache(maxsize=None)
def backbone_for(base: str | None):
    """The frozen base model, loaded once per process (`None`: the shipped tiny SAM)."""
    from .. import load_backbone

    return load_backbone(base)


@lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of the samcl package's Python sources: results reproduce only with the same code (and base weights,
    which the fingerprint holds). Recorded per run, so a run resumed across a code change shows in the report."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def as_json(value):
    """`value` as it reads back from JSON (tuples become lists), so fingerprints compare equal after a restart."""
    return json.loads(json.dumps(value))


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SamclError(f"{path}: unreadable ({exc}); delete it to start that run again") from None


@dataclass(frozen=True)
class ProtocolRun:
    """One (method, seed) protocol run."""

    method: str
    seed: int
    lr: float | None
    size: BenchmarkSize
    suite: SuiteSpec
    base: str | None
    state: str
    replay_matched_bytes: int
    identity: str  # sha256 of the base weights
    device: str | None = None

    @property
    def folder(self) -> Path:
        return Path(self.state) / self.method / f"seed-{self.seed}"

    def fingerprint(self) -> dict:
        return as_json({"method": self.method, "seed": self.seed, "lr": self.lr, "size": asdict(self.size),
                        "suite": self.suite.describe(), "base_weights": self.identity,
                        "replay_matched_bytes": self.replay_matched_bytes, "samcl_version": __version__,
                        "strengths": strengths()})

    def units_done(self) -> int:
        """Evaluations (zero-shot + steps) the saved progress already holds (0 if none or from another config)."""
        try:
            progress = read_json(self.folder / PROGRESS)
        except SamclError:
            return 0
        if progress is None or progress.get("fingerprint") != self.fingerprint():
            return 0
        return len(progress["result"]["rows"])


__getattr__ = renamed_names(__name__, {"Job": "ProtocolRun"}, globals())


def run_job(job: ProtocolRun, context: WorkerContext) -> dict:
    """Run (or resume, or just read back) one (method, seed) protocol; returns the result's raw fields."""
    folder, fingerprint = job.folder, job.fingerprint()
    progress = read_json(folder / PROGRESS)
    if progress is not None and progress.get("fingerprint") != fingerprint:
        made = (f"{folder / PROGRESS}: made with another configuration (method, seed, sizes, learning rate or "
                "base)")
        raise SamclError(f"{made}; use another state folder (BenchmarkConfig.state) or delete this one",
                         field="BenchmarkConfig.state")
    if progress is not None and progress.get("done"):
        return {**progress["result"], "code": progress.get("code")}
    backbone = backbone_for(job.base)
    torch.manual_seed(job.seed)
    suite = job.suite.build(job.size.train, job.size.test, job.seed)
    strategy = make_strategy(job.method, backbone, job.lr, job.size, suite, job.seed, job.replay_matched_bytes,
                             job.device)
    resume = None
    if progress is not None:
        resume = ProtocolResult.from_raw(progress["result"])
        if progress.get("snapshot"):
            strategy.load_state(folder / progress["snapshot"])
    snapshot = progress.get("snapshot") if progress else None

    def on_step(result: ProtocolResult) -> None:
        nonlocal snapshot
        step = result.steps_done
        if step > 0:
            snapshot = f"step-{step}"
            if (folder / snapshot).exists():  # a crash after writing it, before progress.json named it
                shutil.rmtree(folder / snapshot)
            strategy.save_state(folder / snapshot)
        atomic_write_json(folder / PROGRESS, {"fingerprint": fingerprint, "result": result.raw(),
                                              "snapshot": snapshot, "done": False, "code": code_digest()})
        for old in folder.glob("step-*"):
            if old.name != snapshot and old.is_dir():
                shutil.rmtree(old)
        context.step_done(f"{job.method} seed {job.seed} step {step}")

    result = run_protocol(strategy, suite.domains, suite.extra, progress=False, resume=resume, on_step=on_step)
    atomic_write_json(folder / PROGRESS, {"fingerprint": fingerprint, "result": result.raw(), "snapshot": snapshot,
                                          "done": True, "code": code_digest()})
    return {**result.raw(), "code": code_digest()}

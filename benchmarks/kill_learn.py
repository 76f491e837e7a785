"""Fault injection: kill `samcl learn` with SIGKILL at random moments and check the store every time.

    python benchmarks/kill_learn.py --kills 50 [--seed 0] [--fault-delay 0.1] [--keep DIR]

Setup: the tiny SAM config of the tests saved with `save_pretrained` as the base, three toy domains in the
reference layout, and a store holding two learned domains (learned by unkilled `samcl learn` runs, which also
time the phases). Then, again and again, `python -m samcl.cli learn STORE --domain dK` runs as a subprocess
with SAMCL_FAULT_DELAY set, so every step of the store write (each temporary file, each rename, the manifest,
the cleanup) announces itself on stderr and pauses: the kill window really covers the writes. The kill moment
is drawn (seeded) in one of three windows: anywhere in the run, during learning (after the training progress
bar appears), or during the store write (after "save: start"). After each kill the store is reopened and
verified:

  - the manifest opens and every file it names is present with the sha256 it records (checked here
    independently, and again by ModuleStore.load, which also loads every module into an AugModule);
  - the module set is exactly the previous one (manifest byte-identical) or the previous one plus the new
    domain with every earlier entry unchanged: never anything in between;
  - the selector routes a test image's pooled features to one of the store's domains, and the
    whole pipeline segments that image; `samcl info` opens the store.

Files a killed writer leaves (temporaries, an uncommitted generation) are counted: readers ignore them, and a
final unkilled learn must remove them all. Prints a summary ending in "N/N stores valid".
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' tiny SAM config and toy data
#: Where the `samcl` package the children import lives (main() points it at a frozen copy, so that edits to
#: the working tree during a long run cannot mix two versions of the code between writer and reader).
CODE_ROOT = ROOT

TRAIN_MARKER = "samcl-fault: train: "  # training has started (announced when SAMCL_FAULT_DELAY is set)
SAVE_MARKER = "samcl-fault: save: start"
DONE_MARKER = "samcl-fault: save: done"
FAULT_PREFIX = "samcl-fault: "
DOMAINS = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 170, 60)}
LEARN_ARGS = ["--epochs", "2", "--batch-size", "2"]
NEW_STORE_ARGS = ["--samples-per-domain", "8", "--selector-epochs", "3"]


@dataclass
class Workspace:
    root: Path
    base: Path
    store: Path
    data: dict[str, Path]
    probe_image: Path


def prepare(root: Path) -> Workspace:
    """The tiny SAM (saved like an HF model), toy domains, and the paths of a store not yet created."""
    import torch
    from conftest import tiny_sam_config
    from helpers import write_domain

    from samcl.backbone import SamBackbone

    torch.manual_seed(0)
    with contextlib.redirect_stderr(io.StringIO()):  # save_pretrained's progress bar
        SamBackbone.from_config(tiny_sam_config(), seed=0).model.save_pretrained(root / "tiny-sam")
    data = {}
    for seed, (name, color) in enumerate(DOMAINS.items()):
        data[name] = write_domain(root / name, color, seed=seed, n_train=8, n_test=2) / "train"
    return Workspace(root, root / "tiny-sam", root / "store", data, root / "red" / "test" / "images" / "img000.png")


def learn_command(ws: Workspace, domain: str, data: Path) -> list[str]:
    command = [sys.executable, "-m", "samcl.cli", "learn", str(ws.store), "--domain", domain, "--data", str(data),
               *LEARN_ARGS]
    if not (ws.store / "manifest.json").is_file():
        command += ["--base", str(ws.base), *NEW_STORE_ARGS]
    return command


def child_env(delay: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               TQDM_MININTERVAL="0", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CODE_ROOT), env.get("PYTHONPATH")]))
    if delay > 0:
        env["SAMCL_FAULT_DELAY"] = str(delay)
    else:
        env.pop("SAMCL_FAULT_DELAY", None)
    return env


class Run:
    """A `samcl learn` subprocess whose stderr is watched for markers (with the time each first appeared)."""

    def __init__(self, command: list[str], env: dict):
        self.start = time.monotonic()
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                     cwd=CODE_ROOT)  # not ROOT: `-m` puts the cwd first on sys.path
        self.text = ""
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                return
            with self.lock:
                self.text += chunk.decode(errors="replace")
                now = time.monotonic() - self.start
                for marker in (TRAIN_MARKER, SAVE_MARKER, DONE_MARKER):
                    if marker in self.text and marker not in self.seen:
                        self.seen[marker] = now

    def wait_marker(self, marker: str, timeout: float = 120.0) -> float | None:
        """Seconds since launch when `marker` appeared, or None if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if marker in self.text:
                    return self.seen.get(marker, time.monotonic() - self.start)
            if self.proc.poll() is not None:
                self.reader.join(5)
                with self.lock:
                    return self.seen.get(marker) if marker in self.text else None
            time.sleep(0.005)
        raise TimeoutError(f"no {marker!r} within {timeout} s")

    def kill_at(self, seconds_since_launch: float) -> bool:
        """SIGKILL at that moment; False if the process had already exited by then."""
        while True:
            left = self.start + seconds_since_launch - time.monotonic()
            if self.proc.poll() is not None:
                return False
            if left <= 0:
                break
            time.sleep(min(left, 0.005))
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.reader.join(5)
        return True

    def finish(self, timeout: float = 300.0) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(5)
        return code

    def phase(self) -> str:
        """Where the process was when it died: its last fault-point step, or the phase before the write."""
        with self.lock:
            steps = [line[len(FAULT_PREFIX):].strip() for line in self.text.splitlines() if line.startswith(FAULT_PREFIX)]
            if steps:
                return steps[-1]
            return "learning" if TRAIN_MARKER in self.text else "startup"


# ------------------------------------------------------------------------------------------------ verification
@dataclass
class Snapshot:
    manifest: bytes | None
    domains: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, store: Path) -> "Snapshot":
        path = store / "manifest.json"
        if not path.is_file():
            return cls(None)
        raw = path.read_bytes()
        return cls(raw, json.loads(raw)["domains"])


class Verifier:
    """Opens a store the way a reader does and checks it against the state before the killed write."""

    def __init__(self, backbone, probe_image: Path):
        from samcl.io import read_image

        self.backbone = backbone
        self.identity = backbone.identity()
        self.image = read_image(probe_image)
        self.pixels = backbone.preprocess(self.image)[0][None]

    def check(self, path: Path, before: Snapshot, new_domain: str) -> tuple[str, int]:
        """-> ("previous" | "new", number of unreferenced files left). Raises if the store is invalid."""
        import torch

        from samcl import SAMCL, Prompt
        from samcl.cli import main as cli_main
        from samcl.store import ModuleStore

        store = ModuleStore(path)
        if before.manifest is None and not store.exists():
            return "previous", len(unreferenced(path, None))
        raw = store.manifest_path.read_bytes()
        manifest = json.loads(raw)
        names = [d["name"] for d in manifest["domains"]]
        old_names = [d["name"] for d in before.domains]
        if raw == before.manifest:
            outcome = "previous"
        else:
            assert names == old_names + [new_domain], f"domains {names}, expected {old_names} (+ {new_domain})"
            assert manifest["domains"][:-1] == before.domains, "an earlier domain's entry changed"
            outcome = "new"
        files = [(d["file"], d["sha256"]) for d in manifest["domains"] if d["kind"] == "module"]
        files += [(manifest[k]["file"], manifest[k]["sha256"]) for k in ("selector", "buffer")
                  if manifest[k].get("file")]
        for relative, digest in files:  # independent of the store's own checks
            data = (path / relative).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest, f"{relative}: sha256 differs from the manifest"
        state = store.load(identity=self.identity)  # verifies every hash again and loads every module
        assert len(state.modules) == sum(d["kind"] == "module" for d in manifest["domains"])
        samcl = SAMCL(self.backbone, state, store=None, device="cpu")
        with torch.no_grad():
            pooled = self.backbone.pool_stats(self.backbone.prefix(self.pixels, samcl.selector_block))
            (chosen,), (score,) = samcl.engine.route(pooled, fallback=False)
            assert 0 <= chosen < len(names), f"selector chose class {chosen} of {len(names)}"
            assert state.selector.num_domains == len(names) and (score is None or score == score), "selector state"
            result = samcl.segment([self.image], [Prompt.of([[20, 20]])])[0]
            assert result.masks.shape[1:] == self.image.shape[:2] and result.domain in names + ["base"]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            assert cli_main(["info", str(path), "--json"]) == 0, err.getvalue()
        return outcome, len(unreferenced(path, manifest))


def unreferenced(store: Path, manifest: dict | None) -> list[str]:
    """Files in the store folder that its manifest does not name (leftovers of killed writers)."""
    named = {"manifest.json", ".lock"}
    if manifest is not None:
        named |= {d["file"] for d in manifest["domains"] if d.get("file")}
        named |= {manifest[k]["file"] for k in ("selector", "buffer") if manifest[k].get("file")}
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*")
                  if p.is_file() and p.relative_to(store).as_posix() not in named)


# ------------------------------------------------------------------------------------------------ the experiment
@dataclass
class Timing:
    """Phase times of an unkilled run, seconds since launch: training starts, the store write starts and ends
    (the process then still reports and exits), the process ends."""

    train: float
    save: float
    saved: float
    end: float


def calibrate(ws: Workspace, delay: float, domain: str, data: Path) -> Timing:
    run = Run(learn_command(ws, domain, data), child_env(delay))
    code = run.finish()
    if code != 0:
        raise RuntimeError(f"calibration learn failed ({code}):\n{run.text[-3000:]}")
    end = time.monotonic() - run.start
    save = run.seen.get(SAVE_MARKER, end)
    return Timing(run.seen.get(TRAIN_MARKER, 0.0), save, run.seen.get(DONE_MARKER, end), end)


@dataclass
class Outcome:
    killed: bool
    mode: str
    phase: str
    state: str
    leftovers: int
    error: str | None = None


def one_kill(ws: Workspace, verifier: Verifier, domain: str, data: Path, delay: float, mode: str,
             rng: np.random.Generator, timing: Timing) -> Outcome:
    """Launch a learn of `domain`, kill it at a moment drawn in the `mode` window, verify the store."""
    before = Snapshot.of(ws.store)
    run = Run(learn_command(ws, domain, data), child_env(delay))
    if mode == "any":
        killed = run.kill_at(rng.uniform(0.0, 0.97 * timing.end))
    else:
        marker, window = ((TRAIN_MARKER, timing.save - timing.train) if mode == "learning"
                          else (SAVE_MARKER, timing.saved - timing.save))
        seen = run.wait_marker(marker)
        killed = seen is not None and run.kill_at(seen + rng.uniform(0.0, max(window, 0.01)))
    if not killed:
        run.finish()
    phase = run.phase()
    try:
        state, leftovers = verifier.check(ws.store, before, domain)
        return Outcome(killed, mode, phase, state, leftovers)
    except Exception as exc:  # an invalid store: report it, keep going
        return Outcome(killed, mode, phase, "INVALID", -1, f"{type(exc).__name__}: {exc}")


def kill_at_marker(ws: Workspace, verifier: Verifier, domain: str, data: Path, delay: float,
                   marker: str) -> Outcome:
    """Deterministic variant for the tests: SIGKILL as soon as `marker` appears (the writer is paused there)."""
    before = Snapshot.of(ws.store)
    run = Run(learn_command(ws, domain, data), child_env(delay))
    seen = run.wait_marker(marker)
    killed = seen is not None and run.kill_at(0.0)
    if not killed:
        run.finish()
    state, leftovers = verifier.check(ws.store, before, domain)
    return Outcome(killed, f"at {marker!r}", run.phase(), state, leftovers)


def clean_learn(ws: Workspace, domain: str, data: Path) -> None:
    run = Run(learn_command(ws, domain, data), child_env(0.0))
    if run.finish() != 0:
        raise RuntimeError(f"final learn failed:\n{run.text[-3000:]}")


def phase_key(phase: str) -> str:
    """A fault-point step (file names with generation numbers) -> the kind of moment it is."""
    def kind(name: str) -> str:
        name = name.strip()
        if name == "manifest.json":
            return "manifest"
        return next((f"{k} file" for k in ("selector", "buffer") if name.startswith(f"{k}.g")), "module file")

    if phase == "startup":
        return "startup (imports, loading the base and the store)"
    if phase == "learning":
        return "learning (training, embeddings, selector)"
    if phase == "save: start":
        return "store write: before the first file"
    if phase.startswith("temporary file for "):
        return f"store write: {kind(phase[len('temporary file for '):].rsplit(' ', 1)[0])} in its temporary file"
    if phase == "save: wrote manifest.json":
        return "store write: manifest committed, old files not yet removed"
    if phase.startswith("save: wrote "):
        return f"store write: {kind(Path(phase[len('save: wrote '):]).name)} renamed into place"
    if phase == "save: done":
        return "store write: finished, process exiting"
    return phase


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs that must land (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-delay", type=float, default=0.1,
                        help="seconds the writer pauses at each step of a store write (SAMCL_FAULT_DELAY)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args(argv)

    global CODE_ROOT
    rng = np.random.default_rng(args.seed)
    with contextlib.ExitStack() as stack:
        root = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kill-learn-")))
        root.mkdir(parents=True, exist_ok=True)
        CODE_ROOT = root / "code"
        shutil.copytree(ROOT / "samcl", CODE_ROOT / "samcl", ignore=shutil.ignore_patterns("__pycache__"),
                        dirs_exist_ok=True)
        sys.path.insert(0, str(CODE_ROOT))  # this process verifies with the same frozen copy
        import torch

        torch.set_num_threads(1)
        ws = prepare(root)
        names = list(ws.data)
        t0 = time.monotonic()
        calibrate(ws, args.fault_delay, names[0], ws.data[names[0]])
        timing = calibrate(ws, args.fault_delay, names[1], ws.data[names[1]])
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        print(f"kill_learn: samcl frozen from {ROOT} (HEAD {commit or '?'} + working tree)", flush=True)
        print(f"kill_learn: store with {names[0]}, {names[1]}; an unkilled learn takes {timing.end:.1f} s "
              f"(training bar at {timing.train:.1f} s, store write {timing.save:.1f}-{timing.saved:.1f} s with "
              f"{args.fault_delay} s pauses at each step); this machine, 2 shared CPU cores", flush=True)
        from samcl import load_backbone

        verifier = Verifier(load_backbone(ws.base), ws.probe_image)
        outcomes: list[Outcome] = []
        attempt = 0
        while sum(o.killed for o in outcomes) < args.kills and attempt < 3 * args.kills:
            mode = rng.choice(["any", "learning", "writing"], p=[0.2, 0.3, 0.5])
            domain = f"d{attempt:03d}"
            outcome = one_kill(ws, verifier, domain, ws.data[names[attempt % len(names)]], args.fault_delay,
                               str(mode), rng, timing)
            outcomes.append(outcome)
            attempt += 1
            flag = "killed" if outcome.killed else "finished first"
            print(f"  {attempt:3d} {mode:8s} {flag:14s} at {outcome.phase[:58]:58s} -> {outcome.state}"
                  f"{'' if outcome.leftovers <= 0 else f' ({outcome.leftovers} leftover files)'}"
                  f"{'' if not outcome.error else '  ' + outcome.error}", flush=True)
        leftovers_max = max((o.leftovers for o in outcomes), default=0)
        clean_learn(ws, "final", ws.data[names[0]])
        final_state, final_leftovers = verifier.check(ws.store, Snapshot.of(ws.store), "final")
        final = json.loads((ws.store / "manifest.json").read_text())
        killed = [o for o in outcomes if o.killed]
        valid = [o for o in killed if o.state != "INVALID"]
        phases: dict[str, int] = {}
        for o in killed:
            phases[phase_key(o.phase)] = phases.get(phase_key(o.phase), 0) + 1
        print(f"\n{len(killed)} SIGKILLs of `samcl learn` ({attempt} runs, {attempt - len(killed)} finished before "
              f"their kill time; seed {args.seed}; {time.monotonic() - t0:.0f} s on this machine)")
        for key, count in sorted(phases.items(), key=lambda kv: -kv[1]):
            print(f"  {count:3d} killed during {key}")
        print(f"  store afterwards: previous state {sum(o.state == 'previous' for o in killed)}, "
              f"new state {sum(o.state == 'new' for o in killed)}, invalid {len(killed) - len(valid)}")
        print(f"  leftover files of killed writers, ignored by readers: up to {leftovers_max}; after the next "
              f"unkilled learn: {final_leftovers} (store holds {len(final['domains'])} domains)")
        print(f"{len(valid)}/{len(killed)} stores valid")
        return 0 if len(valid) == len(killed) == args.kills and final_leftovers == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""`samcl benchmark`: reports, learning-rate choice, resuming, the CLI. A tiny random SAM keeps it fast; the
`--quick` defaults (the shipped tiny SAM, the embedded suite) run their first protocol step."""

import json

import pytest
from conftest import tiny_sam_config
from helpers import write_domain

from samcl import SamclError
from samcl import bench as bm
from samcl.backbone import TINY_SAM_DIR, SamBackbone
from samcl.bench import lrsearch
from samcl.cli import main

TINY = bm.BenchmarkSize(train=4, test=2, epochs=1, batch_size=2, buffer=4, replay_bytes=150_000, lr_grid=(1e-3, 1e-2))


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sam")
    SamBackbone.from_config(tiny_sam_config(), seed=0).model.save_pretrained(folder)
    return str(folder)


def _config(tmp_path, base, methods, **kw):
    return bm.BenchmarkConfig(out=tmp_path / "out", methods=methods, seeds=kw.pop("seeds", [0]), base=base,
                              sizes=kw.pop("sizes", TINY), progress=False, **kw)


def test_benchmark_reports_every_method_with_tables_and_plots(tmp_path, tiny_base):
    report = bm.run_benchmark(_config(tmp_path, tiny_base, list(bm.METHODS)))
    out = tmp_path / "out"
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics_sha256"] == report["metrics_sha256"]
    assert saved["config"]["code_sha256"] == bm.code_digest() and "warnings" not in saved
    assert list(saved["methods"]) == list(bm.METHODS)
    order, extra = saved["config"]["order"], saved["config"]["extra"]
    assert len(order) == 5 and extra == ["general", "camouflage_sand", "documents"]
    for name, data in saved["methods"].items():
        agg = data["aggregate"]
        assert set(data["seeds"]) == {"0"}
        assert {"AA", "FM_reference", "FM_best", "FT"} <= set(agg["continual"]["iou"])
        assert set(agg["final"]) == set(order + extra)
        assert len(data["seeds"]["0"]["matrix_iou"]) == len(order) + 1
        assert agg["seconds"]["learn_cpu"]["mean"] is not None
        assert (data["lr"] is None) == (name == "zero-shot")
    samcl = saved["methods"]["samcl"]
    assert samcl["aggregate"]["selector_accuracy"]["mean"] is not None
    assert saved["methods"]["samcl-oracle"]["aggregate"]["continual"]["iou"]["FM_best"]["mean"] == pytest.approx(0.0)
    assert saved["methods"]["zero-shot"]["aggregate"]["storage"]["total"]["mean"] == 0
    # replay-matched: one module + a memory within SAMCL's (paper selector's) total bytes (its exact count)
    samcl_storage = saved["methods"]["samcl-mlp"]["seeds"]["0"]["storage"]
    module = samcl_storage["module_total"] // len(order)
    assert saved["config"]["replay_bytes"]["replay-matched"] == samcl_storage["total"] - module
    matched = saved["methods"]["replay-matched"]["seeds"]["0"]["storage"]
    assert matched["replay"] <= samcl_storage["total"] - module  # (no synthetic image fits this tiny SAMCL's bytes)
    assert saved["methods"]["replay"]["seeds"]["0"]["storage"]["replay"] > matched["replay"]
    markdown = (out / "results.md").read_text()
    for text in ("FM (ref.)", "FM (best)", "| samcl |", "## Learning rates", "## Storage", "## Final MAE",
                 "One seed: no spread shown.", "3 positive points per image and epoch (the reference's prompt regime)"):
        assert text in markdown
    assert "±" not in markdown  # one seed: means only, not "± 0.0"
    for plot in ("accuracy_vs_storage.png", "forgetting.png", "final_iou.png"):
        assert (out / plot).stat().st_size > 10_000


def test_learning_rates_are_chosen_on_the_first_domain_and_cached(tmp_path, tiny_base, monkeypatch):
    config = _config(tmp_path, tiny_base, ["sequential", "samcl-noprompt"], seeds=[0, 1])
    first = bm.run_benchmark(config)
    aa = first["methods"]["sequential"]["aggregate"]["continual"]["iou"]["AA"]
    per_seed = [first["methods"]["sequential"]["seeds"][s]["continual"]["iou"]["AA"] for s in ("0", "1")]
    assert aa["n"] == 2 and aa["mean"] == pytest.approx(sum(per_seed) / 2)
    assert aa["std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5)  # sample std (ddof 1)
    samcl_row = next(line for line in (tmp_path / "out" / "results.md").read_text().splitlines()
                     if line.startswith("| samcl-noprompt |"))
    assert samcl_row.count("±") == 7  # two seeds: mean ± std in every score column
    rates = first["learning_rates"]
    assert set(rates) == {"augmodule", "augmodule-no-prompt"}
    for choice in rates.values():
        grid = choice["grid"]
        assert set(grid) == {repr(lr) for lr in TINY.lr_grid}
        assert grid[repr(choice["lr"])] == max(grid.values())

    def no_grid(job):
        raise AssertionError("the cached learning rates were not used")

    monkeypatch.setattr(lrsearch, "run_grid_job", no_grid)
    again = bm.run_benchmark(config)  # every run done and every rate cached: nothing is recomputed
    assert again["metrics_sha256"] == first["metrics_sha256"]
    assert again["learning_rates"] == rates


def test_interrupted_benchmark_resumes_to_the_same_numbers(tmp_path, tiny_base):
    methods = ["samcl", "o-lora", "replay"]
    whole = bm.run_benchmark(_config(tmp_path / "whole", tiny_base, methods))
    config = _config(tmp_path / "cut", tiny_base, methods, max_steps=4)
    with pytest.raises(bm.BenchmarkStopped):
        bm.run_benchmark(config)  # samcl: zero-shot + 3 steps done and saved
    progress = json.loads((config.state_dir / "samcl" / "seed-0" / bm.PROGRESS).read_text())
    assert not progress["done"] and progress["snapshot"] == "step-3"
    assert len(progress["result"]["rows"]) == 4
    assert [p.name for p in (config.state_dir / "samcl" / "seed-0").glob("step-*")] == ["step-3"]
    with pytest.raises(bm.BenchmarkStopped):
        bm.run_benchmark(config)  # samcl finishes, o-lora stops in the middle
    resumed = bm.run_benchmark(replace_steps(config, None))
    assert resumed["metrics_sha256"] == whole["metrics_sha256"]
    for method in methods:
        assert resumed["methods"][method]["seeds"]["0"]["matrix_iou"] == whole["methods"][method]["seeds"]["0"]["matrix_iou"]
        assert resumed["methods"][method]["seeds"]["0"]["storage"] == whole["methods"][method]["seeds"]["0"]["storage"]
        learned = resumed["methods"][method]["seeds"]["0"]["learn"]
        assert [s["domain"] for s in learned] == whole["config"]["order"]  # every step ran exactly once


def replace_steps(config, max_steps):
    from dataclasses import replace

    return replace(config, max_steps=max_steps)


def test_state_from_another_configuration_is_refused(tmp_path, tiny_base):
    config = _config(tmp_path, tiny_base, ["sequential"], max_steps=2)
    with pytest.raises(bm.BenchmarkStopped):
        bm.run_benchmark(config)
    changed = _config(tmp_path, tiny_base, ["sequential"], sizes=bm.BenchmarkSize(**{**TINY.__dict__, "epochs": 2}))
    with pytest.raises(SamclError, match="another configuration"):
        bm.run_benchmark(changed)


def test_cli_benchmark_on_domain_folders(tmp_path, tiny_base, capsys):
    for i, colour in enumerate([(40, 100, 200), (200, 60, 40), (90, 200, 90)]):
        write_domain(tmp_path / "data" / f"d{i}", colour, seed=i, n_train=4, n_test=2)
    out = tmp_path / "out"
    argv = ["benchmark", "--base", tiny_base, "--methods", "sequential,samcl", "--seeds", "0", "--epochs", "1",
            "--batch-size", "2", "--out", str(out), "--data", f"d0={tmp_path / 'data' / 'd0'}",
            "--data", f"d1={tmp_path / 'data' / 'd1'}", "--extra", f"d2={tmp_path / 'data' / 'd2'}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "samcl" in printed and "digest" in printed and "AA (IoU %)" in printed  # the summary table
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["order"] == ["d0", "d1"] and saved["config"]["extra"] == ["d2"]
    assert saved["command"].startswith("samcl benchmark --out")
    assert "--data d0=" in saved["command"] and "--methods sequential,samcl" in saved["command"]


def test_benchmark_help_lists_every_method_it_runs(capsys):
    assert main(["benchmark", "--help"]) == 0
    printed = capsys.readouterr().out
    listed = printed[printed.index("methods (all by default"):printed.index("examples:")]
    assert [line.split()[0] for line in listed.splitlines()[1:] if line.strip()] == list(bm.METHODS)


@pytest.mark.parametrize("argv, message", [
    (["--methods", "samcl,nope"], "unknown method nope"),
    (["--seeds", "0,0"], "distinct"),
    (["--data", "a=/no/such/folder", "--data", "b=/no/such/folder"], "/no/such/folder"),
    (["--extra", "a=/x"], "go with --data"),
])
def test_cli_benchmark_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    assert main(["benchmark", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.skipif(not (TINY_SAM_DIR / "config.json").is_file(), reason="shipped tiny SAM not built yet")
def test_quick_benchmark_runs_the_embedded_suite_on_the_shipped_tiny_sam(tmp_path, capsys):
    """`--quick` with the defaults: the shipped tiny SAM and the embedded suite at the quick sizes. Its first protocol
    step runs and is saved, then --max-steps stops it (exit 3) with the resume hint. (Every method through the
    whole protocol: test_benchmark_reports_every_method_with_tables_and_plots, on a tiny random SAM.)"""
    out = tmp_path / "out"
    assert main(["benchmark", "--quick", "--methods", "zero-shot", "--out", str(out), "--max-steps", "1"]) == 3
    assert "run the same command again to continue" in capsys.readouterr().err
    saved = json.loads((out / "state" / "zero-shot" / "seed-0" / "progress.json").read_text())["result"]
    assert saved["order"] == ["polyps", "camouflage", "shadows", "skin_lesions", "cells"]
    assert saved["extra"] == ["general", "camouflage_sand", "documents"]
    (zero_shot,) = saved["rows"]
    assert {row["images"] for row in zero_shot.values()} == {bm.QUICK.test}
    assert all(0 < row["iou"] < 1 for row in zero_shot.values())


def _compare_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"
    spec = importlib.util.spec_from_file_location("samcl_bench_compare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_script_finds_a_changed_score(tmp_path, tiny_base, capsys):
    """benchmarks/compare.py (how a rerun is checked against the committed table): identical runs agree, a score
    moved by half a point is found, with its size, and passes only under a tolerance above it."""
    compare = _compare_script()
    bm.run_benchmark(_config(tmp_path / "a", tiny_base, ["sequential", "samcl"]))
    bm.run_benchmark(_config(tmp_path / "b", tiny_base, ["sequential", "samcl"]))
    first, second = tmp_path / "a" / "out" / "results.json", tmp_path / "b" / "out" / "results.json"
    assert compare.main([str(first), str(second)]) == 0  # a rerun from scratch: same numbers
    assert "identical" in capsys.readouterr().out
    changed = json.loads(second.read_text())
    changed["methods"]["samcl"]["seeds"]["0"]["matrix_iou"][1][0] += 0.005
    second.write_text(json.dumps(changed))
    assert compare.main([str(first), str(second)]) == 1
    printed = capsys.readouterr().out
    assert "0.500" in printed and "differ" in printed
    assert compare.main([str(first), str(second), "--tolerance", "0.6"]) == 0
    second.write_text("[1]")
    with pytest.raises(SystemExit) as stop:
        compare.main([str(first), str(second)])
    assert stop.value.code == 2 and "not a samcl benchmark results.json" in capsys.readouterr().err


def _group_alive(group: int) -> bool:
    import os

    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _saved_steps(state) -> int:
    """Protocol evaluations saved so far over every (method, seed) run of a state folder."""
    return sum(len(json.loads(p.read_text())["result"]["rows"]) for p in state.glob("*/seed-*/progress.json"))


@pytest.mark.slow  # two benchmark runs with workers: about two minutes on 2 cores
def test_ctrl_c_stops_the_workers_at_once_and_the_rerun_finishes_the_same(tmp_path, tiny_base):
    """Ctrl-C during a --jobs 2 run (SIGINT to the whole process group, as a terminal sends it): exit 130 with the
    resume hint and no traceback; the workers stop where they are (at most the step each had in hand is saved
    after the signal, with room for a slow parent; they used to run their (method, seed) runs to the end first) and none is left running.
    The same command then continues and ends with the numbers of an uncut run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    argv = ["benchmark", "--base", tiny_base, "--quick", "--epochs", "1", "--methods", "sequential,ewc,replay,samcl",
            "--jobs", "2", "--json"]
    out = tmp_path / "cut"
    runner = "import sys; from samcl.cli import main; sys.exit(main(sys.argv[1:]))"

    def sigint_as_in_a_terminal():  # a background job of a non-interactive shell would inherit SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-c", runner, *argv, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=sigint_as_in_a_terminal)
    deadline = time.monotonic() + 300
    while _saved_steps(out / "state") < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no step saved in 300 s"
        time.sleep(0.05)
    before = _saved_steps(out / "state")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; every finished step is saved in" in err and "run the same command again" in err
    assert "Traceback" not in err and "leaked" not in err
    assert _saved_steps(out / "state") <= before + 4  # two per worker at most, for a slow parent (was 14 here)
    gone = time.monotonic() + 30  # (multiprocessing's resource tracker leaves once the parent has gone)
    while _group_alive(proc.pid) and time.monotonic() < gone:
        time.sleep(0.1)
    assert not _group_alive(proc.pid), subprocess.run(["ps", "-o", "pid,args", "-g", str(proc.pid)],
                                                       capture_output=True, text=True).stdout
    assert not (out / "results.json").exists()

    assert main([*argv, "--out", str(out)]) == 0
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    resumed = json.loads((out / "results.json").read_text())
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert resumed["metrics_sha256"] == whole["metrics_sha256"]

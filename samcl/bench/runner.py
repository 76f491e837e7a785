"""One benchmark run from its configuration to its files: validate the suite, size the replay-matched budget,
choose the learning rates, run (or resume) every (method, seed) job, then write the report."""

from __future__ import annotations

import time

from .. import SamclError
from ..method import config_for
from .config import BenchmarkConfig
from .executor import Executor
from .jobs import ProtocolRun, backbone_for, run_job
from .lrsearch import choose_learning_rates
from .methods import METHODS, check_methods, samcl_storage_bytes
from .protocol import ProtocolResult
from .render import write_outputs
from .report import build_report


def run_benchmark(config: BenchmarkConfig) -> dict:
    """Run (or resume) the whole benchmark and write results.json, results.md and the plots to `config.out`.
    Raises BenchmarkStopped when --max-steps stops it early (everything finished so far is saved)."""
    from ..backbone import resolve_base

    check_methods(config.methods)
    size, state = config.size, config.state_dir
    probe = config.suite.build(size.train, size.test, config.seeds[0])  # validates the folders before any work
    backbone = backbone_for(config.base)
    identity = backbone.identity()["weights_sha256"]
    if len(probe.domains) < 2:
        raise SamclError("the benchmark needs at least two domains to learn")
    names = [d.name for d in probe.domains + probe.extra]
    if len(set(names)) != len(names):
        raise SamclError(f"domain names must be distinct: {', '.join(names)}")
    matched = samcl_storage_bytes(backbone, size, [len(d.train) for d in probe.domains],
                                  len(probe.general.train) if probe.general is not None else None)
    matched -= config_for(backbone.site, rank=size.rank).num_parameters * 4  # replay keeps one module too
    families = sorted({METHODS[m].family for m in config.methods} - {None})
    steps = len(probe.domains) + 1
    total = len(families) * len(size.lr_grid) + len(config.methods) * len(config.seeds) * steps
    start = time.perf_counter()
    executor = Executor(config.jobs, total, config.progress, config.max_steps)
    try:
        rates = choose_learning_rates(families, size, config.suite, config.base, identity, state, executor,
                                      config.device)
        jobs = [ProtocolRun(method, seed, rates[METHODS[method].family]["lr"] if METHODS[method].family else None,
                            size, config.suite, config.base, str(state), matched, identity, config.device)
                for seed in config.seeds for method in config.methods]
        executor.bar.update(sum(job.units_done() for job in jobs))  # a resumed run's bar starts where it stopped
        raws = executor.map(run_job, jobs)
    except BaseException:
        executor.close(stop=True)
        raise
    executor.close()
    codes = sorted({raw.pop("code", None) or "unknown" for raw in raws})
    results = {job: ProtocolResult.from_raw(raw) for job, raw in zip(jobs, raws)}
    report = build_report(config, size, rates, results, matched, resolve_base(config.base))
    report["config"]["code_sha256"] = codes[0] if len(codes) == 1 else codes
    if len(codes) > 1:
        report["warnings"] = ["runs were made with different samcl code (resumed across a code change): "
                              "delete the state folder and run again for a consistent table"]
    report["seconds"] = time.perf_counter() - start
    write_outputs(config.out, report)
    return report

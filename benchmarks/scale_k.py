"""Scale in the number of domains K: store open time, resident memory, per-image latency, selector retraining.

    python benchmarks/scale_k.py                                  # K = 10, 100, 1000; N_e = 300; ViT-B modules
    python benchmarks/scale_k.py --ks 10,100 --size 256 --repeats 2   # quicker
    python benchmarks/scale_k.py --full-reference                 # also run the reference schedule at K = 1000

For each K a store of K random ViT-B AugModules (61,524 parameters each), a buffer of K x N_e pooled feature rows and a
selector is written with the store's own save path; then, per K:
  open      seconds of `SAMCL.open` (every module read, sha256-checked and made resident; the buffer is
            deferred until learning needs it) and of a full verifying load (`ModuleStore.load()`, buffer
            included, as `samcl info` does), each in a fresh process with a warm page cache
  memory    RSS growth of that process over the open (and after the buffer is read too)
  latency   per image: selection (pool + selector MLP, the only part that grows with K) and the whole
            `segment` (prefix, selection, suffix with the chosen module, decoder), on a random image
  retrain   selector retraining after the K-th domain on K x N_e pooled feature rows: samcl's schedule (the reference
            while it fits in `max_steps` steps, else a fixed budget of `max_steps` steps) and the reference
            (25 epochs over the whole buffer; run in full up to --reference-steps steps, else one epoch
            timed and multiplied by 25)
  accuracy  selector accuracy on held-out embeddings of separable synthetic classes after that retrain,
            from a selector trained on the first K - 1 classes: all classes, old classes, the new class
Then: accuracy after --drift consecutive budget retrains at the largest K (does it erode over a run of
retrains?), and the small-K case of `samcl demo` (6 classes, N_e = 64) under both schedules.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_timing import SMALL_SAM  # noqa: E402  (the small random SAM, when the builtin one is missing)
from latency import add_random_domains, test_image, vit_b_backbone  # noqa: E402

from samcl import SAMCL, SelectorConfig
from samcl.method import config_for  # noqa: E402
from samcl.selector import FeatureBuffer, SelectorNet, make_selector, train_selector
from samcl.store import ModuleStore  # noqa: E402

#: Class centres drawn N(0, SPREAD^2) per dimension around unit-variance noise: separable, not trivially so.
SPREAD = 0.5


def rss_bytes(trim: bool = False) -> int:
    """Resident memory of this process; `trim` first hands freed heap pages back to the OS (glibc keeps them)."""
    if trim:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# ----------------------------------------------------------------------------------------------- building
def build_store(path: Path, backbone, k: int, samples_per_domain: int, dtype: str) -> dict:
    start = time.perf_counter()
    samcl = SAMCL.create(backbone, path, dtype=dtype, device="cpu",
                         selector=SelectorConfig(kind="mlp", samples_per_domain=samples_per_domain))
    add_random_domains(samcl, k, samples_per_domain=samples_per_domain, spread=SPREAD)
    built = time.perf_counter() - start
    start = time.perf_counter()
    with samcl.store.lock():
        manifest = samcl.store.save(samcl.module_set)
    saved = time.perf_counter() - start
    on_disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {"build_seconds": built, "save_seconds": saved, "disk_bytes": on_disk,
            "module_bytes": sum(d["bytes"] for d in manifest["domains"]), "buffer_bytes": manifest["buffer"]["bytes"]}


def measure_open(path: Path, size: int | None, threads: int) -> dict:
    """In a fresh process: seconds and RSS growth of SAMCL.open, then of reading the buffer, then a full load."""
    command = [sys.executable, __file__, "--child-open", str(path), "--threads", str(threads)]
    if size is not None:
        command += ["--size", str(size)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def child_open(path: Path, size: int | None) -> dict:
    backbone = vit_b_backbone(size)
    backbone.identity()  # hashing the base's weights is the same for any K: not part of opening the set
    before = rss_bytes()
    start = time.perf_counter()
    samcl = SAMCL.open(path, base=backbone, device="cpu")
    opened = time.perf_counter() - start
    after_open = rss_bytes()
    after_open_trimmed = rss_bytes(trim=True)
    start = time.perf_counter()
    samcl.module_set.buffer.load()
    buffer_seconds = time.perf_counter() - start
    after_buffer = rss_bytes()
    start = time.perf_counter()
    ModuleStore(path).load()
    full = time.perf_counter() - start
    return {"open_seconds": opened, "rss_open": after_open - before, "rss_open_trimmed": after_open_trimmed - before,
            "buffer_read_seconds": buffer_seconds,
            "rss_with_buffer": after_buffer - before, "full_load_seconds": full,
            "bank_bytes": samcl.engine.bank().num_bytes, "domains": len(samcl.domains)}


# ----------------------------------------------------------------------------------------------- latency
def per_call(function, calls: int) -> list[float]:
    function()
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        out.append(time.perf_counter() - start)
    return out


def measure_latency(path: Path, backbone, repeats: int) -> dict:
    samcl = SAMCL.open(path, base=backbone, device="cpu")
    image, prompt = test_image(backbone, 0)
    tokens = backbone.prefix(backbone.preprocess(image)[0][None], samcl.selector_block)
    select = per_call(lambda: samcl.engine.route(backbone.pool_stats(tokens)), 200)
    segment = per_call(lambda: samcl.segment([image], [prompt]), repeats)
    return {"select_seconds": statistics.median(select), "segment_seconds": segment}


# ----------------------------------------------------------------------------------------------- selector
def centres(classes: int, dim: int) -> torch.Tensor:
    """Class centres; the first rows do not depend on `classes` (one seeded stream)."""
    return torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * SPREAD


def separable(classes: int, per_class: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` samples of each class: its centre plus unit Gaussian noise."""
    centre = centres(classes, dim)
    labels = torch.arange(classes).repeat_interleave(per_class)
    noise = torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(seed))
    return centre[labels] + noise, labels


def accuracy(net: SelectorNet, x: torch.Tensor, y: torch.Tensor, new: int) -> dict:
    with torch.no_grad():
        predicted = net.eval()(x).argmax(1)
    hit = predicted == y
    return {"all": hit.float().mean().item(), "old": hit[y < new].float().mean().item(),
            "new": hit[y >= new].float().mean().item()}


def nearest_centre(x: torch.Tensor, y: torch.Tensor, classes: int, dim: int) -> float:
    """Accuracy of the ideal classifier for these classes (nearest true centre): the ceiling."""
    return (torch.cdist(x, centres(classes, dim)).argmin(1) == y).float().mean().item()


def warm_selector(x, y, classes: int, dim: int, epochs: int) -> SelectorNet:
    """A selector trained on the first `classes` classes: a stand-in for the selector as K - 1 retrains left it
    (trained jointly, with Adam at batch 256, to get there in seconds rather than hours)."""
    torch.manual_seed(1)
    net = SelectorNet(dim, classes).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    keep = torch.nonzero(y < classes).flatten()
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in keep[torch.randperm(len(keep), generator=generator)].split(256):
            if len(batch) > 1:
                loss = torch.nn.functional.cross_entropy(net(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return net.eval()


def measure_retrain(k: int, samples_per_domain: int, dim: int, args) -> dict:
    x, y = separable(k, samples_per_domain, dim, 1)
    test_x, test_y = separable(k, 20, dim, 2)
    warm = warm_selector(x, y, k - 1, dim, epochs=args.warm_epochs)
    warm.grow(k, torch.Generator().manual_seed(k))
    buffer = FeatureBuffer(dim, x, y)
    out = {"oracle_nearest_centre": nearest_centre(test_x, test_y, k, dim),
           "before_new_class": accuracy(warm, test_x, test_y, k - 1)}
    config = SelectorConfig(samples_per_domain=samples_per_domain)
    budget = copy.deepcopy(warm)
    start = time.perf_counter()
    train_selector(budget, buffer, config, seed=k, progress=False, new_from=k - 1)
    out["samcl"] = {"seconds": time.perf_counter() - start, "accuracy": accuracy(budget, test_x, test_y, k - 1),
                    "steps": min(config.epochs * -(-len(y) // config.batch_size), config.max_steps)}
    reference_steps = config.epochs * -(-len(y) // config.batch_size)
    reference = copy.deepcopy(warm)
    full = args.full_reference or reference_steps <= args.reference_steps
    epochs = config.epochs if full else 1
    start = time.perf_counter()
    train_selector(reference, buffer, SelectorConfig(epochs=epochs, max_steps=None), seed=k, progress=False)
    seconds = (time.perf_counter() - start) * config.epochs / epochs
    out["reference"] = {"seconds": seconds, "extrapolated": not full, "steps": reference_steps,
                        "accuracy": accuracy(reference, test_x, test_y, k - 1) if full else None}
    out["statistics"] = measure_statistics(k, x, y, test_x, test_y, dim)
    out["_state"] = (budget, buffer, test_x, test_y)
    return out


def measure_statistics(k: int, x: torch.Tensor, y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                       dim: int) -> dict:
    """The default statistics selector (fecam) on the same embeddings: the first K - 1 classes taken one by one,
    then the K-th timed (its statistics and held-out calibration, plus the first routing call, which inverts the
    per-class covariances); accuracy on the same held-out embeddings (closed set, as the MLP's), bytes per class."""
    selector = make_selector(SelectorConfig(kind="fecam", features="mean"), dim)  # these embeddings are means only
    for c in range(k - 1):
        selector.add_domain(x[y == c])
    start = time.perf_counter()
    selector.add_domain(x[y == k - 1])
    selector.choose(test_x[:1], fallback=False)
    seconds = time.perf_counter() - start
    # in chunks: the Mahalanobis distances of N images to K classes hold N x K x proj_dim values at once
    chosen = torch.tensor([c for part in test_x.split(256) for c in selector.choose(part, fallback=False)[0]])
    hit = chosen == test_y
    return {"update_seconds": seconds, "bytes_per_class": selector.num_bytes / k,
            "projected_ceiling": projected_ceiling(selector, test_x, test_y, k, dim),
            "accuracy": {"all": hit.float().mean().item(), "old": hit[test_y < k - 1].float().mean().item(),
                         "new": hit[test_y >= k - 1].float().mean().item()}}


def projected_ceiling(selector, x: torch.Tensor, y: torch.Tensor, classes: int, dim: int) -> float | None:
    """Accuracy of the ideal classifier in the selector's random projection: the true centres and the true
    covariance of the projected unit noise (P^T P), no estimate. No statistics selector on these features can do
    better on average; None without a projection (then `nearest_centre` is the ceiling)."""
    projection = selector.projection
    if projection is None:
        return None
    whiten = torch.linalg.cholesky(projection.T @ projection)
    to_space = lambda z: torch.linalg.solve_triangular(whiten, (z.double() @ projection).T, upper=False).T  # noqa: E731
    centre = to_space(centres(classes, dim))
    chosen = torch.cat([torch.cdist(to_space(part), centre).argmin(1) for part in x.split(1024)])
    return (chosen == y).float().mean().item()


def measure_drift(state, k: int, dim: int, samples_per_domain: int, rounds: int) -> dict:
    """`rounds` more domains after K, each followed by a budget retrain: accuracy on all classes after each."""
    net, buffer, test_x, test_y = state
    curve, seconds = [], []
    for step in range(rounds):
        label = k + step
        noise = torch.randn(samples_per_domain, dim, generator=torch.Generator().manual_seed(100 + step))
        buffer.add(centres(label + 1, dim)[label] + noise, label)
        net.grow(label + 1, torch.Generator().manual_seed(label))
        start = time.perf_counter()
        train_selector(net, buffer, SelectorConfig(samples_per_domain=samples_per_domain), seed=label,
                       progress=False)
        seconds.append(time.perf_counter() - start)
        tx, ty = separable(label + 1, 20, dim, 2)
        curve.append(accuracy(net, tx, ty, label)["all"])
    return {"accuracy_after_each": curve, "seconds": seconds}


def demo_case(args) -> dict:
    """`samcl demo`'s selector: a domain without a module + 5 target domains, N_e = 64, pooled features of the synthetic
    domain suite through the shipped tiny SAM (or a random tiny SAM if it is not installed), both schedules."""
    from samcl import SamclError, load_backbone
    from samcl.backbone import SamBackbone
    from samcl.bench import FULL
    from samcl.data import synthetic

    try:
        backbone, source = load_backbone(None), "builtin tiny SAM"
    except SamclError:
        backbone, source = SamBackbone.from_config(SMALL_SAM, seed=0), "random small SAM (builtin not installed)"
    names = (synthetic.GENERAL, *synthetic.TARGET_DOMAINS)
    block = backbone.default_selector_block

    @torch.no_grad()
    def embed(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for label, name in enumerate(names):
            samples = synthetic.generate(name, count, args.seed, split)
            pixels = torch.stack([backbone.preprocess(s.image)[0] for s in samples])
            xs.append(backbone.pool(backbone.prefix(pixels, block)).float())
            ys.append(torch.full((count,), label))
        return torch.cat(xs), torch.cat(ys)

    x, y = embed("train", FULL.buffer)
    test_x, test_y = embed("test", FULL.test)
    dim = x.shape[1]
    results = {}
    for label_, max_steps in (("reference", None), ("samcl", SelectorConfig().max_steps)):
        torch.manual_seed(0)
        net, buffer = SelectorNet(dim, 1), FeatureBuffer(dim)
        for label in range(len(names)):
            buffer.add(x[y == label], label)
            net.grow(label + 1, torch.Generator().manual_seed(label))
            if label:
                train_selector(net, buffer, SelectorConfig(samples_per_domain=FULL.buffer, max_steps=max_steps),
                               seed=label, progress=False)
        results[label_] = {"accuracy": accuracy(net, test_x, test_y, len(names))["all"], "state": net.state_dict()}
    same = all(torch.equal(t, results["samcl"]["state"][key]) for key, t in results["reference"]["state"].items())
    return {"backbone": source, "classes": len(names), "samples_per_domain": FULL.buffer,
            "reference_accuracy": results["reference"]["accuracy"], "samcl_accuracy": results["samcl"]["accuracy"],
            "identical_weights": same}


# ----------------------------------------------------------------------------------------------- report
def run(args) -> dict:
    torch.set_num_threads(args.threads)
    backbone = vit_b_backbone(args.size)
    dim = backbone.hidden_size
    report = {"config": {"ks": args.ks, "samples_per_domain": args.samples_per_domain, "dtype": args.dtype,
                         "spread": SPREAD,
                         "image_size": backbone.image_size, "hidden_size": dim, "threads": args.threads,
                         "module_parameters": config_for(backbone.site).num_parameters,
                         "max_steps": SelectorConfig().max_steps}, "ks": {}}
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        for k in args.ks:
            path = Path(folder) / f"k{k}"
            row = build_store(path, backbone, k, args.samples_per_domain, args.dtype)
            row.update(measure_open(path, args.size, args.threads))
            row.update(measure_latency(path, backbone, args.repeats))
            retrain = measure_retrain(k, args.samples_per_domain, dim, args)
            state = retrain.pop("_state")
            row["retrain"] = retrain
            report["ks"][k] = row
            print(f"K = {k} done", file=sys.stderr, flush=True)
            if k == max(args.ks) and args.drift:
                report["drift"] = {"k": k, **measure_drift(state, k, dim, args.samples_per_domain, args.drift)}
    if args.demo:
        report["demo"] = demo_case(args)
    return report


def selector_report(report: dict) -> str:
    """The selector tables: the MLP's retrain (samcl's budget and the reference) and the statistics selector."""
    import contextlib
    import io

    c = report["config"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        header = ["K", "buffer", "samcl steps", "samcl retrain", "reference steps", "reference retrain",
                  "acc before", "acc samcl all/old/new", "acc reference all/old/new", "nearest centre"]
        rows = []
        for k, r in report["ks"].items():
            t = r["retrain"]
            acc = lambda a: "-" if a is None else f"{a['all']:.3f}/{a['old']:.3f}/{a['new']:.3f}"  # noqa: E731
            ref = t["reference"]
            reference_time = f"{ref['seconds']:.1f} s" + (" (1 epoch x 25)" if ref["extrapolated"] else "")
            rows.append([k, f"{k * c['samples_per_domain']:,}", f"{t['samcl']['steps']:,}",
                         f"{t['samcl']['seconds']:.1f} s", f"{ref['steps']:,}", reference_time,
                         f"{t['before_new_class']['all']:.3f}", acc(t["samcl"]["accuracy"]), acc(ref["accuracy"]),
                         f"{t['oracle_nearest_centre']:.3f}"])
        print(_table(rows, header))
        print(f"\n(retrain after the K-th domain, from a selector trained on the first K - 1; goal <= 30 s at K = 1,000. "
              f"acc: held-out embeddings, 20 per class; classes: centres N(0, {c['spread']}^2) per dimension, noise 1; "
              "nearest centre: the ideal classifier.)")
        header = ["K", "fecam update after the K-th", "fecam acc all/old/new", "mlp (samcl) acc all/old/new",
                  "ceiling in fecam's projection", "fecam bytes/class", "mlp buffer bytes/class"]
        rows = []
        for k, r in report["ks"].items():
            s, t = r["retrain"]["statistics"], r["retrain"]
            ceiling = s.get("projected_ceiling")
            rows.append([k, f"{s['update_seconds']:.3f} s", acc(s["accuracy"]), acc(t["samcl"]["accuracy"]),
                         "-" if ceiling is None else f"{ceiling:.4f}",
                         f"{s['bytes_per_class']:,.0f}", f"{c['samples_per_domain'] * (c['hidden_size'] * 4 + 8):,}"])
        print("\n" + _table(rows, header))
        print("(the default statistics selector on the same embeddings: closed-form update, no buffer; goal: update "
              "<= 1 s at K = 1,000 and accuracy no lower than the MLP's. Ceiling: the ideal classifier in the random "
              "projection fecam keeps (true centres and covariance); the MLP reads all D dimensions.)")
    return out.getvalue().rstrip("\n")


def print_report(report: dict) -> None:
    c = report["config"]
    print(f"stores of K random ViT-B AugModules ({c['module_parameters']:,} parameters, {c['dtype']}), "
          f"N_e = {c['samples_per_domain']} embeddings of D = {c['hidden_size']} per domain; segment at "
          f"{c['image_size']} px; {c['threads']} threads; selector budget max_steps = {c['max_steps']}\n")
    mib = lambda n: f"{n / 2**20:,.1f} MiB"  # noqa: E731
    header = ["K", "disk", "open", "RSS +open (trimmed)", "bank", "buffer read", "RSS +buffer", "full verify",
              "select", "segment (min)"]
    rows = []
    for k, r in report["ks"].items():
        rows.append([k, mib(r["disk_bytes"]), f"{r['open_seconds']:.2f} s",
                     f"{mib(r['rss_open'])} ({mib(r['rss_open_trimmed'])})", mib(r["bank_bytes"]),
                     f"{r['buffer_read_seconds']:.2f} s", mib(r["rss_with_buffer"]), f"{r['full_load_seconds']:.2f} s",
                     f"{r['select_seconds'] * 1e3:.3f} ms",
                     f"{statistics.median(r['segment_seconds']):.2f} s ({min(r['segment_seconds']):.2f})"])
    print(_table(rows, header))
    print("\n(open: every module read, sha256-checked and resident, buffer deferred; goal <= 2 s at K = 1,000. "
          "RSS: growth over the open; trimmed: after handing freed heap back to the OS, i.e. what stays. "
          "bank: the resident module tensors. full verify: what `samcl info` reads, buffer included.)\n")
    print(selector_report(report))
    if "drift" in report:
        d = report["drift"]
        print(f"\n{len(d['accuracy_after_each'])} more domains after K = {d['k']}, each with a budget retrain "
              f"(median {statistics.median(d['seconds']):.1f} s): accuracy on all classes after each: "
              + " ".join(f"{a:.3f}" for a in d["accuracy_after_each"]))
    if "demo" in report:
        d = report["demo"]
        print(f"\nsamcl demo's selector ({d['classes']} classes, N_e = {d['samples_per_domain']}, {d['backbone']}): "
              f"reference accuracy {d['reference_accuracy']:.3f}, samcl schedule {d['samcl_accuracy']:.3f}, "
              f"identical weights: {d['identical_weights']} (the budget does not apply at this size)")


def _table(rows, header) -> str:
    cells = [[str(x) for x in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(x.rjust(w) for x, w in zip(r, widths)) for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main(argv: list[str] | None = None) -> int:
    global SPREAD
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--ks", type=lambda s: [int(v) for v in s.split(",")], default=[10, 100, 1000])
    parser.add_argument("--samples-per-domain", type=int, default=300, help="N_e (reference: 300)")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="store dtype")
    parser.add_argument("--size", type=int, default=None, help="input size for the segment latency (default: "
                                                               "the config's, 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="timed segment calls per K")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (on cores shared with other "
                        "work 1 is much faster: threads wait for each other)")
    parser.add_argument("--warm-epochs", type=int, default=2, help="epochs of the selector on the first K - 1 classes")
    parser.add_argument("--reference-steps", type=int, default=40_000,
                        help="run the reference schedule in full up to this many steps, else time one epoch")
    parser.add_argument("--full-reference", action="store_true", help="always run the reference in full")
    parser.add_argument("--drift", type=int, default=10, help="budget retrains after the largest K (0: skip)")
    parser.add_argument("--no-demo", dest="demo", action="store_false", help="skip the demo's small-K case")
    parser.add_argument("--spread", type=float, default=SPREAD, help="std of the synthetic class centres "
                                                                     "(noise std 1): smaller is harder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=None, help="folder for the temporary stores")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--selectors-only", action="store_true",
                        help="only the selector part (retrain, accuracy, the statistics selector): no stores built")
    parser.add_argument("--child-open", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    SPREAD = args.spread
    if args.child_open is not None:
        torch.set_num_threads(args.threads)
        print(json.dumps(child_open(args.child_open, args.size)))
        return 0
    if args.selectors_only:
        torch.set_num_threads(args.threads)
        report = {"config": {"samples_per_domain": args.samples_per_domain, "hidden_size": 768, "spread": SPREAD,
                             "max_steps": SelectorConfig().max_steps}, "ks": {}}
        for k in args.ks:
            retrain = measure_retrain(k, args.samples_per_domain, 768, args)
            retrain.pop("_state")
            report["ks"][k] = {"retrain": retrain}
        print(json.dumps(report, default=str) if args.json else selector_report(report))
        return 0
    report = run(args)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every crafted file of issue 26 through the real command, as a child with a 10 s limit: its exit code, its
one-line message, the wall time and the child's peak RSS (os.wait4's rusage of that child alone).

    python benchmarks/adversarial_files.py [--timeout 10] [--keep DIR]

Setup (not timed): two stores on the builtin tiny SAM learned apart by `samcl learn` ('a': red, blue; 'b': cells)
and a folder of the authors' module files for that base (tests/reference_files.py). Each case copies what it
tampers with. The first baseline row is a good `samcl info`: the RSS of a child that imported torch and read a
store, against which the others compare ("x base" = peak RSS / the baseline's); good `segment` and
`import-reference` runs show what those commands cost when nothing is wrong. A case passes when it ends with the
expected exit code within the limit; every bad file is expected to end with exit 2 and one line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from crafted_files import (TINY_BLOCKS, TINY_DIM, TINY_NECK, deep_tuple_key_pickle, duplicate_domain,  # noqa: E402
                           edit_manifest, eps_as_list, fifo, module_file, module_path, nan_module, nested_json, run_cli,
                           stride0_pth, torch_zip, zip_bomb_pth)
from helpers import write_domain  # noqa: E402
from reference_files import write_reference_dir  # noqa: E402

FAST = ["--epochs", "1", "--json"]


def copy(source: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    return Path(shutil.copytree(source, target))


def setup(root: Path) -> None:
    for name, colour, seed in (("red", (200, 30, 30), 0), ("blue", (30, 30, 200), 1), ("cells", (30, 190, 40), 2)):
        write_domain(root / name, colour, seed=seed, n_train=4, n_test=1)
    for store, domain in (("a", "red"), ("a", "blue"), ("b", "cells")):
        result = run_cli(["learn", root / store, "--domain", domain, "--data", root / domain, *FAST], timeout=300)
        assert result["code"] == 0, result
    write_reference_dir(root / "SAM1", TINY_DIM, TINY_BLOCKS, TINY_NECK)


def reference_case(root: Path, name: str, craft) -> list:
    folder = copy(root / "SAM1", root / name)
    victim = folder / "Kvasir.pth"
    victim.unlink()
    craft(victim)
    return ["import-reference", folder, root / f"{name}-out", "--base", "builtin:tiny-sam"]


def store_case(root: Path, name: str, change) -> Path:
    store = copy(root / "a", root / name)
    change(store)
    return store


def cases(root: Path) -> list[tuple[str, list, int]]:
    """(name, argv, expected exit code), files crafted as the list is built."""
    image = root / "red" / "test" / "images" / "img000.png"
    segment = lambda store: ["segment", store, image, "--point", "5,5", "--out", root / "m.png"]  # noqa: E731
    learn = lambda store, data=root / "cells": ["learn", store, "--domain", "green", "--data", data, *FAST]  # noqa
    out = [("baseline: good info", ["info", root / "a"], 0), ("baseline: good segment", segment(root / "a"), 0),
           ("baseline: good import", ["import-reference", root / "SAM1", root / "good-out", "--base",
                                      "builtin:tiny-sam"], 0)]
    out += [(f"{n} .pth", reference_case(root, n, craft), 2) for n, craft in (
        ("fifo", fifo), ("link to /dev/zero", lambda p: p.symlink_to("/dev/zero")),
        ("stride-0 20000x20000", stride0_pth), ("zip bomb 1 GiB", zip_bomb_pth),
        ("deep tuple key", lambda p: torch_zip(p, pickled=deep_tuple_key_pickle())),
        ("NaN weights", lambda p: module_file(p, nan_module)), ("eps as a list", lambda p: module_file(p, eps_as_list)))]
    selector = copy(root / "SAM1", root / "fifo-selector")
    (selector / "Module_Selector.pth").unlink()
    fifo(selector / "Module_Selector.pth")
    out.append(("fifo selector", ["import-reference", selector, root / "fs-out", "--base", "builtin:tiny-sam"], 2))

    def deep_manifest(store: Path) -> None:
        edit_manifest(store, lambda m: m["domains"][0]["info"].update(deep=[]))
        text = (store / "manifest.json").read_text().replace('"deep": []', f'"deep": {nested_json(100_000)}')
        (store / "manifest.json").write_text(text)

    out.append(("nested manifest.json: info", ["info", store_case(root, "deep-manifest", deep_manifest)], 2))
    points = copy(root / "cells" / "train", root / "deep-points")
    (points / "masks" / "points.json").write_text('{"img000.jpg": ' + nested_json(100_000) + "}")
    out.append(("nested points.json: learn", learn(root / "new-1", points), 2))
    duplicate = store_case(root, "duplicate", lambda s: edit_manifest(s, duplicate_domain))
    out += [("duplicate name: info", ["info", duplicate], 2), ("duplicate name: segment", segment(duplicate), 2)]
    out.append(("no backbone: info", ["info", store_case(root, "no-backbone",
                                                         lambda s: edit_manifest(s, lambda m: m.pop("backbone")))], 2))
    for new in ("base", "../../x"):
        out.append((f"merge --rename cells={new}",
                    ["merge", root / f"merged-{len(out)}", root / "a", root / "b", "--rename", f"cells={new}"], 2))
    fifo_store = store_case(root, "fifo-module", lambda s: fifo(module_path(s)))
    out += [("fifo module: info", ["info", fifo_store], 2), ("fifo module: segment", segment(fifo_store), 2),
            ("fifo module: learn", learn(fifo_store), 2)]
    lock_only = root / "lock-only"
    lock_only.mkdir()
    (lock_only / ".lock").touch()
    out.append(("lock-only folder: merge into it", ["merge", lock_only, root / "a", root / "b"], 0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--keep", type=Path, default=None, help="build the cases in this folder and keep it")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="adversarial-")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    try:
        setup(root)
        rows, base_rss, passed = [], None, 0
        for name, argv, expected in cases(root):
            result = run_cli(argv, args.timeout)
            base_rss = base_rss or result["peak_rss"]
            ok = result["code"] == expected and (expected == 0 or len(result["lines"]) == 1)
            passed += ok
            line = result["lines"][-1] if result["lines"] else ""
            rows.append({"case": name, "exit": result["code"], "ok": ok, "seconds": round(result["seconds"], 2),
                         "peak_rss_mb": round(result["peak_rss"] / 2**20, 1),
                         "x_base": round(result["peak_rss"] / base_rss, 2),
                         "message": line.replace(str(root), "ROOT")})
        for row in rows:
            print(f"{row['case']:34s} exit {str(row['exit']):4s} {'ok ' if row['ok'] else 'BAD'} {row['seconds']:6.2f} s "
                  f"{row['peak_rss_mb']:7.1f} MB ({row['x_base']:.2f} x base)  {row['message'][:150]}")
        print(f"{passed}/{len(rows)} cases ended as expected within {args.timeout:g} s")
        print(json.dumps({"timeout_s": args.timeout, "rows": rows}))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

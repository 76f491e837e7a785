"""The commands that make or change a store without training: import the authors' modules, forget, merge; and the
plain-text table every command's summary prints."""

from __future__ import annotations

from .. import SamclError
from ..io import print_json


def table(rows: list[list], header: list[str]) -> str:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def cmd_import_reference(args) -> int:
    from ..reference import import_reference

    report = import_reference(args.directory, args.out, args.base, args.selector, args.domains)
    if args.json:
        print_json(report)
        return 0
    rows = [[name, "module" if name in report["modules"] else "no_module",
             report["modules"].get(name, {}).get("tensors", "-"), f"{report['modules'][name]['values']:,}"
             if name in report["modules"] else "-"] for name in report["domains"]]
    print(table(rows, ["domain", "kind", "tensors", "values"]))
    print(f"\nimported into {args.out}: adapted blocks {report['adapted_blocks']}, selector block "
          f"{report['selector']['block']}, heat mode 'reference' (the authors' forward); learn refuses this store")
    return 0


def cmd_forget(args) -> int:
    from .. import forget

    report = forget(args.store, args.domain)
    if args.json:
        print_json(report)
        return 0
    how = (f"the mlp selector retrained from scratch on the remaining buffer (seed {report['seed']})"
           if report["selector_retrained"] else f"its {report['selector']} statistics removed exactly")
    how_learned = " (it was learned without a module: only its selector state)" if report["without_module"] else ""
    print(f"forgot {args.domain}{how_learned}: {how}; store now holds: {', '.join(report['domains'])}")
    return 0


def cmd_merge(args) -> int:
    from .. import merge

    renames = dict(args.rename)
    if len(renames) != len(args.rename):
        raise SamclError("--rename: the same domain renamed twice")
    report = merge(args.out, args.stores, rename=renames)
    if args.json:
        print_json(report)
        return 0
    how = "mlp selector retrained from scratch on both buffers" if report["selector_retrained"] \
        else f"{report['selector']} statistics combined exactly"
    print(f"merged {len(args.stores)} stores into {args.out} ({how}): {', '.join(report['domains'])}")
    return 0

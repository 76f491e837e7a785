"""The `samcl` command line: every flag with its range (`samcl.cli.flags`), help text, default and examples.

Defaults of learning flags are read from the config dataclasses (`TrainConfig`, `SelectorConfig`), never
restated here. Only the subcommand being run gets its flags (`build_parser(command)`), so `samcl --help` and
`samcl info` do not import the model code that those dataclasses live next to.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .. import __version__
from . import flags as t
from .examples import BUILTIN, EXAMPLES, TOP_EXAMPLES
from .renamed import renamed_flag
from .runtime_flags import add_export as _export
from .runtime_flags import add_runtime
from .serve_flags import MAX_EPOCHS, add_serve
from .shared_flags import (add_base, add_points_frame, add_precision, add_prompt, add_routing, config_flag,
                           defaults)
from .track import EXAMPLES as TRACK_EXAMPLES, add_track

MAX_BATCH = 4096


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; '(default: X)' after every flag whose default means something."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        meaningless = default is None or default is False or default == [] or default is argparse.SUPPRESS \
            or (action.nargs == 0 and isinstance(default, bool))  # a switch's default is its absence
        if "%(default)" not in text and action.option_strings and not meaningless:
            text += " (default: %(default)s)"
        return text


#: what argparse takes for a value, not a flag, when it starts with "-": a number, or numbers joined by commas
#: (`--point -1,10` reaches the point check, which names the image it misses, instead of "expected one argument")
NEGATIVE_VALUE = re.compile(r"^-(\d+\.?\d*|\.\d+)(e-?\d+)?(,-?(\d+\.?\d*|\.\d+)(e-?\d+)?)*$")


class Parser(argparse.ArgumentParser):
    """Usage errors as one line naming the flag: 'samcl learn: error: argument --lr: expected ...'."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_VALUE  # argparse's own knob (its default: plain numbers only)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


ALL = "*"


def build_parser(command: str | None = ALL) -> Parser:
    """The parser; with a `command` name only that subcommand gets its flags, with None none does (cheap
    start-up: `samcl --help` imports no model code)."""
    parser = Parser(prog="samcl", formatter_class=HelpFormatter, epilog=TOP_EXAMPLES,
                    description="Teach Segment Anything new image domains one after another without forgetting: one "
                                "tiny AugModule per domain, and a Module Selector that picks the right one per image.")
    parser.add_argument("--version", action="version", version=f"samcl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--device", type=t.device, default=None,
                        help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    adders = {"learn": _learn, "info": _info, "segment": _segment, "eval": _eval, "demo": _demo,
              "benchmark": _benchmark, "import-reference": _import_reference, "forget": _forget, "merge": _merge,
              "serve": add_serve, "export": _export,
              "track": add_track}
    helps = {"learn": "learn one domain into a store (created on first use)",
             "info": "show a store's domains, sizes and base model",
             "segment": "segment images; the selector picks the module",
             "eval": "evaluate a store on test folders",
             "demo": "SAMCL end to end on the shipped tiny SAM and synthetic domains (CPU)",
             "benchmark": "the continual protocol for SAMCL and the baselines, several seeds: tables and plots",
             "import-reference": "the authors' released modules (checkpoint/SAM1 or SAM2) as a new store",
             "forget": "remove one domain exactly: its module, its selector state, every selector weight that saw it",
             "merge": "the union of module sets learned apart on the same base, as a new store (no image needed)",
             "serve": "an HTTP API and a click-to-segment page over a store",
             "track": "propagate objects' prompts through a video with the set's module (SAM 2, SAM 3 tracker)",
             "export": "ONNX graphs of the encoder and decoder, the module rows and the selector, runnable without samcl"}
    for name, add in adders.items():
        child = sub.add_parser(name, help=helps[name], formatter_class=HelpFormatter,
                               epilog=TRACK_EXAMPLES if name == "track" else EXAMPLES.get(name))
        if command in (ALL, name):
            add(child)
    return parser


def command_of(argv: list[str]) -> str | None:
    """The subcommand named in argv (skipping the global flags), or None."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--device":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _learn(p) -> None:
    from .. import SelectorConfig, TrainConfig
    from ..method import AugModuleConfig
    from ..selector import DEFAULT_FEATURES, DEFAULT_KIND, KINDS

    selector = defaults(SelectorConfig)
    p.add_argument("store", type=Path, help="module-set directory (created by the first learn)")
    add_base(p, f"first learn only; default: {BUILTIN}")
    p.add_argument("--domain", required=True, help="name of the new domain")
    p.add_argument("--data", required=True, type=Path,
                   help="split folder (images/, masks/) or domain folder (its train/ is used)")
    p.add_argument("--group-by", metavar="REGEX", default=None,
                   help="frames of videos: a regular expression whose first group, matched at the start of each "
                        "file name (without extension), names the image's video, e.g. '(.+)_\\d+$' for "
                        "<video>_<number>.png; a video's frames are then held out together when the selector sets "
                        "its open-set cut (split, new videos of the domain go to base)")
    p.add_argument("--skip-unlabeled", action="store_true",
                   help="learn from the images that have a mask and leave out (with a warning and a count) those "
                        "without one (default: an image without a mask is an error)")
    config_flag(p, "--epochs", TrainConfig, "epochs")
    config_flag(p, "--batch-size", TrainConfig, "batch_size")
    config_flag(p, "--lr", TrainConfig, "lr", narrow={"low_open": True, "high": 10})  # 0 trains nothing
    config_flag(p, "--seed", TrainConfig, "seed")
    config_flag(p, "--points-per-image", TrainConfig, "points_per_image", metavar="N")
    config_flag(p, "--prompts", TrainConfig, "prompts")
    config_flag(p, "--amp", TrainConfig, "amp", extra="(CUDA, or a CPU with native bfloat16; refused on other "
                                                     "CPUs, where it is many times slower)")
    p.add_argument("--without-module", action="store_true",
                   help="learn this domain without a module: its images run the base model (SAM's own behaviour)")
    renamed_flag(p, "--as-base", "--without-module")
    p.add_argument("--replace", action="store_true",
                   help="relearn a domain the store holds from --data alone: its old module and selector state "
                        "are replaced in one new generation (a kill before that commit leaves the old set)")
    config_flag(p, "--cache-mb", TrainConfig, "cache_bytes", scale=2**20, narrow={"high": 1 << 40}, dest="cache_mb",
                extra="(in MiB)")
    add_points_frame(p)
    new = p.add_argument_group("new store only")
    config_flag(new, "--rank", AugModuleConfig, "rank", narrow={"high": 1024}, extra="of the AugModules")
    # by hand: its None is "not given" (a new store's mlp, or an existing store's own kind, which it must match)
    new.add_argument("--selector", choices=list(KINDS), default=None, metavar="KIND",
                     help=f"selector kind: {', '.join(KINDS)} (default: {DEFAULT_KIND}; mlp = the paper's MLP on a "
                          "feature buffer; ncm, fecam, ranpac keep per-domain statistics and send images of no "
                          "learned domain to base)")
    config_flag(new, "--selector-features", SelectorConfig, "features", dest="selector_features", metavar="FEATURES",
                extra="(default: " + ", ".join(f"{kind} {features}" for kind, features in DEFAULT_FEATURES.items())
                + ")")
    config_flag(new, "--selector-block", SelectorConfig, "block", dest="selector_block")
    config_flag(new, "--samples-per-domain", SelectorConfig, "samples_per_domain")
    config_flag(new, "--selector-epochs", SelectorConfig, "epochs", dest="selector_epochs")
    # by hand: 0 is SelectorConfig.max_steps None (the reference schedule always), which a number flag cannot say
    new.add_argument("--selector-max-steps", type=t.int_range(0, 10_000_000), default=selector["max_steps"],
                     help="SGD steps per selector retrain once the epochs over the whole buffer would take more "
                          "(a long history); 0 = the reference schedule always; an integer from 0 to 10,000,000")
    # by hand: the storage dtype is `SAMCL.create`'s argument, not a config field
    new.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                     help="storage dtype of modules, selector and buffer")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _info(p) -> None:
    p.add_argument("store", type=Path, help="module-set directory")
    p.add_argument("--json", action="store_true", help="print everything as JSON")


#: `samcl segment --auto`'s generator flags: AutoMaskConfig's fields (Meta's SamAutomaticMaskGenerator names)
AUTO_FLAGS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
              "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio",
              "crop_n_points_downscale_factor", "min_mask_region_area")


def _auto(p) -> None:
    from ..inference import AutoMaskConfig

    group = p.add_argument_group("automatic masks (--auto: every object, no prompt; Meta's generator options)")
    group.add_argument("--auto", action="store_true",
                       help="automatic masks: a grid of points over each image on its routed module, no prompt "
                            "given; --out names a .json file (COCO results, and a label PNG beside it) or a folder")
    for name in AUTO_FLAGS:
        config_flag(group, "--" + name.replace("_", "-"), AutoMaskConfig, name, extra="(with --auto)")


def _segment(p) -> None:
    p.add_argument("store", type=Path, help="module-set directory")
    p.add_argument("images", type=Path, nargs="+", help="one or more images (one batch, mixed domains allowed)")
    add_prompt(p)
    p.add_argument("--out", required=True,
                   help="mask file (.png, .bmp, .tif, .webp: the extension names the format), '-' for PNG on "
                        "stdout, a device or fifo (written through), or a folder for several images (<stem>.png "
                        "each); a symlink is written through, never replaced")
    p.add_argument("--overlay", default=None, metavar="FILE",
                   help="also write the image with the mask and the prompt drawn over it (a .png file, or a folder "
                        "for several images, like --out)")
    p.add_argument("--multimask", action="store_true",
                   help="write SAM's three masks (multimask output) as <stem>_0.png, <stem>_1.png, <stem>_2.png "
                        "beside --out's name, with their three scores")
    add_routing(p, force="run this domain's module instead of the selector's pick ('base': none)",
                fallback="always run the nearest learned domain's module, even for an image that fits none "
                         "(default: such images run on the base; statistics selectors only)")
    add_base(p, "default: the one recorded in the store")
    add_precision(p)
    add_runtime(p)
    p.add_argument("--json", action="store_true",
                   help="print image, domain ('base' when the base model ran), domain score, score (the mask's "
                        "predicted IoU) and mask file as JSON (--multimask: masks and scores, three each)")
    _auto(p)


def _eval(p) -> None:
    p.add_argument("store", type=Path, help="module-set directory")
    p.add_argument("--data", type=t.named_dir, action="append", required=True, metavar="NAME=DIR",
                   help="true domain name and a split or domain folder (its test/ is used); repeatable, one per name")
    p.add_argument("--seed", type=t.seed, default=0, help="seed for points where points.json has none")
    p.add_argument("--clicks", type=t.int_range(1, 100), default=None, metavar="N",
                   help="score interactive segmentation instead: N simulated clicks per image (RITM's clicker, "
                        "the previous mask fed back), mIoU@1,3,5,10 and NoC@85/90 for the selector's pick, the "
                        "base and the domain's own module")
    add_points_frame(p)
    add_base(p, "default: the one recorded in the store")
    add_precision(p)
    add_runtime(p)
    p.add_argument("--json", action="store_true", help="print the scores as JSON")


def _forget(p) -> None:
    p.add_argument("store", type=Path, help="module-set directory")
    p.add_argument("domain", help="the domain to remove")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _rename(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f"expected OLD=NEW, got {text!r}")
    return old, new


def _merge(p) -> None:
    p.add_argument("out", type=Path, help="new store folder for the union")
    p.add_argument("stores", type=Path, nargs="+", help="two or more stores learned on the same base")
    p.add_argument("--rename", type=_rename, action="append", default=[], metavar="OLD=NEW",
                   help="give a domain of the second or a later store another name (repeatable)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _import_reference(p) -> None:
    from ..reference import REFERENCE_DOMAINS, SELECTOR_FILE

    p.add_argument("directory", type=Path, help="folder of the authors' module files (<domain>.pth)")
    p.add_argument("out", type=Path, help="new store folder")
    p.add_argument("--base", required=True,
                   help="the base the modules were trained on: SAM ViT-B for SAM1 files, SAM 2 Hiera-T for SAM2 "
                        "files (Meta's .pth / .pt, or an HF directory)")
    p.add_argument("--selector-file", dest="selector", type=Path, default=None,
                   help=f"their selector file (default: DIRECTORY/{SELECTOR_FILE}, else the folder above)")
    p.add_argument("--domains", type=lambda v: tuple(c.strip() for c in v.split(",") if c.strip()),
                   default=",".join(REFERENCE_DOMAINS), metavar="A,B,...",
                   help="the selector's domains in its output order; the one without a module file "
                        "is learned without a module (default: %(default)s)")
    renamed_flag(p, "--classes", "--domains")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _demo(p) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for results.json and plots")
    p.add_argument("--quick", action="store_true", help="a smaller run (under 2 minutes on 2 CPU cores)")
    p.add_argument("--seed", type=t.seed, default=0, help="seed for data, training and points")
    add_base(p, f"default: {BUILTIN}")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _benchmark(p) -> None:
    """Flags of `samcl benchmark` (run by `samcl.bench.main_benchmark`), on the same validated types."""
    p.description = ("Learn the domains in order with every method (same epochs and batch; learning rates chosen per "
                     "method on a held-out part of the first domain), evaluate all domains after every step, and "
                     "write results.json, results.md and plots. Resumable: rerun the same command after an "
                     "interruption.")
    from ..bench import METHODS  # the registry alone: no model code

    width = max(map(len, METHODS))
    p.epilog = ("methods (all by default; --methods picks some):\n"
                + "".join(f"  {name:<{width}}  {method.description}\n" for name, method in METHODS.items())
                + "\nexamples:\n"
                "  samcl benchmark --quick --out bench-quick\n"
                "  samcl benchmark --out bench --jobs 2                         # embedded suite, seeds 0,1,2\n"
                "  samcl benchmark --base sam_vit_b_01ec64.pth --data polyps=data/kvasir "
                "--data camo=data/camo --out bench\n")
    p.add_argument("--out", type=Path, default=Path("benchmark-out"), help="folder for results and plots")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    p.add_argument("--seeds", type=t.seed_list, default=None, help="comma-separated seeds (default: 0,1,2; --quick: 0)")
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 CPU cores")
    add_base(p, f"default: {BUILTIN}")
    p.add_argument("--data", dest="domain", type=t.named_dir, action="append", metavar="NAME=DIR",
                   help="a domain folder (train/ and test/) to learn, in order (default: the embedded suite)")
    p.add_argument("--extra", type=t.named_dir, action="append", metavar="NAME=DIR",
                   help="a domain folder only evaluated (unseen), with --data")
    p.add_argument("--general", type=t.named_dir, metavar="NAME=DIR",
                   help="the base model's own domain: SAMCL learns it without a module, all are evaluated on it")
    p.add_argument("--epochs", type=t.int_range(1, MAX_EPOCHS), default=None,
                   help="epochs per domain for every method (default: the suite's)")
    p.add_argument("--batch-size", type=t.int_range(1, MAX_BATCH), default=None,
                   help="batch size for every method (default: the suite's)")
    p.add_argument("--jobs", type=t.int_range(1, 256), default=1, help="parallel (method, seed) runs, one CPU thread each")
    p.add_argument("--state", type=Path, default=None, help="state folder for resuming (default: OUT/state)")
    p.add_argument("--max-steps", type=t.int_range(1, 1_000_000), default=None,
                   help="stop after this many protocol steps (exit code 3); rerun to continue")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


if __name__ == "__main__":  # pragma: no cover
    build_parser().print_help(sys.stdout)

"""The `samcl` command line: every flag with its range (`samcl.cli.flags`), help text, default and examples.

Defaults of learning flags are read from the config dataclasses (`TrainConfig`, `SelectorConfig`), never
restated here. Only the subcommand being run gets its flags (`build_parser(command)`), so `samcl --help` and
`samcl info` do not import the model code that those dataclasses live next to.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from .. import __version__
from ..options import field_of
from . import flags as t
from .examples import BUILTIN, EXAMPLES, TOP_EXAMPLES
from .runtime_flags import add_export as _export
from .runtime_flags import add_runtime
from .track import EXAMPLES as TRACK_EXAMPLES, add_track

MAX_EPOCHS, MAX_BATCH = 100_000, 4096


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; '(default: X)' after every flag whose default means something."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        meaningless = default is None or default is False or default == [] or default is argparse.SUPPRESS
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


def defaults(config_class) -> dict:
    """A config dataclass's field defaults by name (the one source of the CLI's learning defaults)."""
    return {f.name: f.default for f in dataclasses.fields(config_class)}


def config_flag(group, flag: str, config_class, name: str, *, narrow: dict | None = None, extra: str = "",
                **kwargs) -> None:
    """A flag that sets `config_class.name`, with the field's help, default and accepted range (`narrow`: a
    tighter range for the command line)."""
    field = field_of(config_class, name)
    accepted = field.metadata["range"]
    if narrow:
        accepted = dataclasses.replace(accepted, **narrow)
    if accepted.choices is not None:
        kwargs["choices"] = list(accepted.choices)
    else:
        kwargs["type"] = t.in_range(accepted)
    text = field.metadata["help"] + (f" {extra}" if extra else "")
    if accepted.choices is None:
        text += f"; {accepted.describe().removesuffix(', or None')}"
    group.add_argument(flag, dest=kwargs.pop("dest", name), default=field.default, help=text, **kwargs)


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
              "serve": _serve, "export": _export,
              "track": lambda p: add_track(p, _base, add_precision)}
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
             "track": "propagate one object's prompt through a video with the set's module (SAM 2 bases)",
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


def _base(p, default_text: str) -> None:
    p.add_argument("--base", help="base SAM or SAM 2: an HF directory, a Hugging Face model id "
                                  f"(facebook/sam-vit-base), Meta's SAM .pth, SAM 2.1 .pt, or {BUILTIN} "
                                  f"({default_text})")


def add_precision(p) -> None:
    """--precision for every inference command (segment, eval, serve): the encoder's precision at inference;
    the help says what auto picks on this machine (read from the CPU's flags, no model code imported)."""
    from ..inference import precision

    p.add_argument("--precision", choices=precision.CHOICES, default="auto",
                   help="inference precision of the image encoder: bfloat16 casts its weights once at load (the "
                        "selector, modules and decoder stay float32; the store is never changed); "
                        f"{precision.describe_auto()}")


def _points_frame(p) -> None:
    p.add_argument("--points-frame", choices=["auto", "pixels", "square1024"], default="auto",
                   help="coordinates of masks/points.json: pixels of the image, or the 1024x1024 square the "
                        "reference code stretches every image to; auto: square1024 for the reference's "
                        "[[points], [labels]] entries, pixels otherwise")


def _learn(p) -> None:
    from .. import SelectorConfig, TrainConfig
    from ..selector import DEFAULT_FEATURES, DEFAULT_KIND, FEATURES, KINDS

    train, selector = defaults(TrainConfig), defaults(SelectorConfig)
    p.add_argument("store", type=Path, help="module-set directory (created by the first learn)")
    _base(p, f"first learn only; default: {BUILTIN}")
    p.add_argument("--domain", required=True, help="name of the new domain")
    p.add_argument("--data", required=True, type=Path,
                   help="split folder (images/, masks/) or domain folder (its train/ is used)")
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
    p.add_argument("--as-base", action="store_true",
                   help="learn this domain as the 'base' class: no module, SAM's own behaviour")
    p.add_argument("--replace", action="store_true",
                   help="relearn a domain the store holds from --data alone: its old module and selector state "
                        "are replaced in one new generation (a kill before that commit leaves the old set)")
    p.add_argument("--cache-mb", type=t.float_range(0, 1 << 20), default=train["cache_bytes"] / 2**20,
                   help="memory for the training images' encoder prefix (and masks) kept across epochs, in MiB; "
                        "beyond it the prefix is recomputed every epoch (slower, same result); 0 = keep none")
    _points_frame(p)
    new = p.add_argument_group("new store only")
    new.add_argument("--rank", type=t.int_range(1, 1024), default=10, help="AugModule rank r")
    new.add_argument("--selector", choices=list(KINDS), default=None, metavar="KIND",
                     help=f"selector kind: {', '.join(KINDS)} (default: {DEFAULT_KIND}; mlp = the paper's MLP on an "
                          "embedding buffer; ncm, fecam, ranpac keep per-domain statistics and send images of no "
                          "learned domain to base)")
    new.add_argument("--selector-features", choices=list(FEATURES), default=None, metavar="FEATURES",
                     help="what the selector reads of the pooled block: mean (the paper's grid mean) or mean_std "
                          "(mean and spread over the grid; the same encoder work) (default: "
                          + ", ".join(f"{kind} {features}" for kind, features in DEFAULT_FEATURES.items()) + ")")
    config_flag(new, "--selector-block", SelectorConfig, "block", dest="selector_block")
    config_flag(new, "--samples-per-domain", SelectorConfig, "samples_per_domain")
    config_flag(new, "--selector-epochs", SelectorConfig, "epochs", dest="selector_epochs")
    new.add_argument("--selector-max-steps", type=t.int_range(0, 10_000_000), default=selector["max_steps"],
                     help="SGD steps per selector retrain once the epochs over the whole buffer would take more "
                          "(a long history); 0 = the reference schedule always")
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
    p.add_argument("--point", type=t.point, action="append", default=[], metavar="X,Y",
                   help="positive point, 0-based pixels (repeatable)")
    p.add_argument("--negative", type=t.point, action="append", default=[], metavar="X,Y",
                   help="negative point, 0-based pixels (repeatable)")
    p.add_argument("--box", type=t.box, default=None, metavar="X0,Y0,X1,Y1", help="box prompt, 0-based pixels")
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
    p.add_argument("--force", metavar="DOMAIN", default=None,
                   help="run this domain's module instead of the selector's pick ('base': none)")
    p.add_argument("--no-fallback", action="store_true",
                   help="always run the nearest learned domain's module, even for an image that fits none "
                        "(default: such images run on the base; statistics selectors only)")
    _base(p, "default: the one recorded in the store")
    add_precision(p)
    add_runtime(p)
    p.add_argument("--json", action="store_true",
                   help="print image, module (domain; 'base' when it fell back), selector score, mask score and "
                        "mask file as JSON (--multimask: masks and scores, three each)")
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
    _points_frame(p)
    _base(p, "default: the one recorded in the store")
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
    from ..reference import REFERENCE_CLASSES, SELECTOR_FILE

    p.add_argument("directory", type=Path, help="folder of the authors' module files (<domain>.pth)")
    p.add_argument("out", type=Path, help="new store folder")
    p.add_argument("--base", required=True,
                   help="the base the modules were trained on: SAM ViT-B for SAM1 files, SAM 2 Hiera-T for SAM2 "
                        "files (Meta's .pth / .pt, or an HF directory)")
    p.add_argument("--selector-file", dest="selector", type=Path, default=None,
                   help=f"their selector file (default: DIRECTORY/{SELECTOR_FILE}, else the folder above)")
    p.add_argument("--classes", type=lambda v: tuple(c.strip() for c in v.split(",") if c.strip()),
                   default=",".join(REFERENCE_CLASSES), metavar="A,B,...",
                   help="the selector's classes in its output order; the one without a module file is the base "
                        "class (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _demo(p) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for results.json and plots")
    p.add_argument("--quick", action="store_true", help="a smaller run (under 2 minutes on 2 CPU cores)")
    p.add_argument("--seed", type=t.seed, default=0, help="seed for data, training and points")
    _base(p, f"default: {BUILTIN}")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _serve(p) -> None:
    from ..serve import TOKEN_ENV, ServeConfig

    d = defaults(ServeConfig)
    p.add_argument("store", type=Path, help="module-set directory (only read; a learn into it is picked up)")
    p.add_argument("--host", default=d["host"],
                   help=f"address to listen on; anything but loopback needs a token (--token or ${TOKEN_ENV})")
    p.add_argument("--port", type=t.int_range(1, 65535), default=d["port"], help="TCP port")
    p.add_argument("--token", default=None,
                   help=f"API token clients send as 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV}; "
                        "the variable keeps it out of the process list)")
    p.add_argument("--workers", type=t.int_range(1, 256), default=1,
                   help="server processes sharing the port (each opens the store and has its own cache)")
    p.add_argument("--batch-window-ms", type=t.float_range(0, 1000), default=d["batch_window_ms"],
                   help="how long a request waits for others to share its batch")
    p.add_argument("--max-batch", type=t.int_range(1, 1024), default=d["max_batch"],
                   help="most requests in one batch; 1 turns cross-request batching off")
    p.add_argument("--cache-mb", type=t.float_range(0, 1 << 20), default=d["cache_bytes"] / 2**20,
                   help="MiB of per-image encoder prefixes kept (least recently used evicted)")
    p.add_argument("--max-upload-mb", type=t.float_range(0, 4096, low_open=True), default=d["max_upload_bytes"] / 2**20,
                   help="largest image upload in MiB")
    p.add_argument("--max-megapixels", type=t.float_range(0, 1000, low_open=True), default=d["max_megapixels"],
                   help="largest image in megapixels (refused before decoding)")
    p.add_argument("--max-inflight-mb", type=t.float_range(0, 1 << 20, low_open=True),
                   default=d["max_inflight_bytes"] / 2**20,
                   help="MiB that all requests in flight may hold together (bodies, and decoded images at "
                        "16 to 26 bytes a pixel by format); beyond it a request gets 503 with Retry-After")
    p.add_argument("--body-timeout-seconds", type=t.float_range(0.1, 3600), default=d["body_timeout_seconds"],
                   help="a request body not complete this long after its headers (or silent for 10 s) is "
                        "answered 408 and its share of --max-inflight-mb given back")
    p.add_argument("--reload-seconds", type=t.float_range(0.05, 3600), default=d["reload_seconds"],
                   help="how often the store's manifest is checked for a new generation")
    p.add_argument("--reload-timeout-seconds", type=t.float_range(0.1, 3600), default=d["reload_timeout_seconds"],
                   help="a new generation still loading after this long is abandoned (reported by /healthz); "
                        "the previous one keeps serving")
    p.add_argument("--threads", type=t.int_range(1, 1024), default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-fallback", action="store_true",
                   help="always run the selector's nearest domain, even for images no learned domain fits")
    p.add_argument("--refine", choices=["first", "all", "outside"], default=d["refine"],
                   help="which clicks heat the encoder: first (a further click of an object costs only the "
                        "decoder), all (every click re-runs the adapted blocks), outside (only a click outside the "
                        "heated region does)")
    add_precision(p)
    add_runtime(p)
    _base(p, "default: the one recorded in the store")
    _label_studio(p.add_argument_group("Label Studio ML backend (at /label-studio)"))


def _label_studio(ls) -> None:
    """`samcl serve`'s flags for the Label Studio backend (into the argument group `ls`)."""
    ls.add_argument("--label-studio-url", metavar="URL", default=None,
                    help="Label Studio's address, for task images and learning (default: $LABEL_STUDIO_URL)")
    ls.add_argument("--label-studio-api-key", metavar="KEY", default=None,
                    help="a personal access token of Label Studio (default: $LABEL_STUDIO_API_KEY, which keeps it "
                         "out of the process list)")
    ls.add_argument("--allow-image-url", metavar="PREFIX", action="append", default=[],
                    help="task images may also come from URLs starting with this http(s) prefix (repeatable); "
                         "any other URL is refused without a fetch")
    ls.add_argument("--label-studio-basic-auth", metavar="USER:PASSWORD", default=None,
                    help="basic auth Label Studio must send (default: $SAMCL_LS_BASIC_AUTH; without it a server "
                         "with --token takes the token as the basic-auth password)")
    ls.add_argument("--train-every", metavar="N", type=t.int_range(0, 1_000_000), default=0,
                    help="learn a project after every N new annotations (0: only on Start Training)")
    ls.add_argument("--train-epochs", metavar="N", type=t.int_range(1, MAX_EPOCHS), default=5,
                    help="epochs of a project's learn (a project's extra_params may set its own)")
    ls.add_argument("--learn-max-tasks", metavar="N", type=t.int_range(1, 1_000_000), default=1000,
                    help="most annotated tasks a project's learn takes (more: the learn fails, saying so)")
    ls.add_argument("--learn-max-megapixels", metavar="MP", type=t.float_range(0, 100_000, low_open=True),
                    default=400.0, help="most megapixels of task images a project's learn holds together")
    ls.add_argument("--label-studio-preannotate", choices=("on", "off"), default="on",
                    help="a /predict without a context (a task opened) gets automatic masks; off: none")
    ls.add_argument("--label-studio-max-masks", metavar="N", type=t.int_range(1, 1000), default=20,
                    help="most automatic masks a task gets, highest predicted IoU first")


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
    _base(p, f"default: {BUILTIN}")
    p.add_argument("--data", dest="domain", type=t.named_dir, action="append", metavar="NAME=DIR",
                   help="a domain folder (train/ and test/) to learn, in order (default: the embedded suite)")
    p.add_argument("--extra", type=t.named_dir, action="append", metavar="NAME=DIR",
                   help="a domain folder only evaluated (unseen), with --data")
    p.add_argument("--general", type=t.named_dir, metavar="NAME=DIR",
                   help="the base model's own domain: SAMCL learns it as its 'base' class, all are evaluated on it")
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

"""Flags that several commands share (--base, --precision, --points-frame, the prompt, the routing) and the
config-field flag builder, apart from the parser so that per-command flag modules (`track`, `serve_flags`) use
the same ones without importing the parser."""

from __future__ import annotations

import dataclasses

from ..options import field_of
from . import flags as t
from .examples import BUILTIN


def defaults(config_class) -> dict:
    """A config dataclass's field defaults by name (the one source of the CLI's learning defaults)."""
    return {f.name: f.default for f in dataclasses.fields(config_class)}


def config_flag(group, flag: str, config_class, name: str, *, narrow: dict | None = None, extra: str = "",
                scale: int = 1, **kwargs) -> None:
    """A flag that sets `config_class.name`, with the field's help, default and accepted range, checked by the
    field's own schema (`flags.field_value`; `narrow`: a tighter range for the command line; `scale`: the field
    holds the flag's value times this, e.g. 2**20 for a flag in MiB of a field in bytes). A `--no-...` flag of a
    bool field that defaults to True turns it off."""
    field = field_of(config_class, name)
    accepted = field.metadata["range"]
    if flag.startswith("--no-") and field.default is True and accepted is not None \
            and set(accepted.choices or ()) == {True, False}:
        # a switch that is on by default: the flag turns it off (not in `CONFIG_FLAGS`: it shows the field negated)
        text = f"{extra} (without it: {field.metadata['help']})" if extra else f"off: {field.metadata['help']}"
        group.add_argument(flag, dest=kwargs.pop("dest", name), action="store_false", help=text)
        return
    if narrow:
        accepted = dataclasses.replace(accepted, **narrow)
    if accepted is not None and accepted.choices is not None:
        kwargs["choices"] = list(accepted.choices)
    elif accepted is not None:
        kwargs["type"] = t.field_value(config_class, name, narrow=narrow, scale=scale)
    text = field.metadata["help"] + (f" {extra}" if extra else "")
    if accepted is not None and accepted.choices is None:
        text += f"; {kwargs['type'].accepted}"
    default = field.default if scale == 1 else field.default / scale
    group.add_argument(flag, dest=kwargs.pop("dest", name), default=kwargs.pop("default", default), help=text,
                       **kwargs)
    if scale == 1:  # (a scaled flag shows another unit than its field: the flag itself refuses what the field would)
        CONFIG_FLAGS[f"{getattr(config_class, '__config_name__', config_class.__name__)}.{name}"] = flag


#: "Config.field" -> its flag, for every flag `config_flag` made in its own unit (`tests/test_one_schema.py` holds
#: `samcl.cli.errors.FLAGS`, the one table an error's field is shown through, to these).
CONFIG_FLAGS: dict[str, str] = {}


def add_base(p, default_text: str) -> None:
    """--base: the base SAM, SAM 2 or SAM 3 tracker, with what its absence means for this command (`default_text`)."""
    p.add_argument("--base", help="base SAM, SAM 2 or SAM 3 tracker: an HF directory, a Hugging Face model id "
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


def add_points_frame(p) -> None:
    p.add_argument("--points-frame", choices=["auto", "pixels", "square1024"], default="auto",
                   help="coordinates of masks/points.json: pixels of the image, or the 1024x1024 square the "
                        "reference code stretches every image to; auto: square1024 for the reference's "
                        "[[points], [labels]] entries, pixels otherwise")


def add_prompt(p, on: str = "") -> None:
    """--point, --negative (repeatable) and --box, 0-based pixels (`on`: of which image, e.g. ' on the
    prompted frame')."""
    p.add_argument("--point", type=t.point, action="append", default=[], metavar="X,Y",
                   help=f"positive point{on}, 0-based pixels (repeatable)")
    p.add_argument("--negative", type=t.point, action="append", default=[], metavar="X,Y",
                   help=f"negative point{on}, 0-based pixels (repeatable)")
    p.add_argument("--box", type=t.box, default=None, metavar="X0,Y0,X1,Y1", help="box prompt, 0-based pixels")


def add_routing(p, *, force: str, fallback: str) -> None:
    """--force DOMAIN and --no-fallback, with the command's own help texts."""
    # by hand: segment, eval and track pass these to `SAMCL.open`/`segment` as keywords, not as a config's fields
    p.add_argument("--force", metavar="DOMAIN", default=None, help=force)
    p.add_argument("--no-fallback", action="store_true", help=fallback)

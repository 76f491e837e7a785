"""The authors' released modules as a samcl store: `samcl import-reference DIR OUT --base CHECKPOINT`.

    report = import_reference("checkpoint/SAM1", "ref-store", "sam_vit_b_01ec64.pth")

Their module file (one per domain, `<domain>.pth`) is a pickled dict of `nn.Module`s; the mapping onto an
AugModule is one to one (`module_tensors`): `A` -> a, `B_i` -> b[i], `norm1_i` -> ln1[i], `norm2_i` -> ln2[i],
`extra.layer` -> heat, `extra.norm` -> heat_ln, `extra.upward` -> neck_in, `extra.upward_` -> neck_out, and
`lora_layer` names the adapted blocks. `Module_Selector.pth` is a state dict of their selector (`layer1`, `norm1`,
..., `layer4`), which is samcl's `SelectorNet` layer for layer (`SELECTOR_LAYERS`); its outputs (their "classes",
samcl's domains) are
`REFERENCE_DOMAINS` in order, the one without a module file learned without a module (it runs the base model).

Imported modules keep the authors' forward (`heat_mode="reference"`: stretched input, their heat and its
placement), recorded in the manifest. Their sets carry no feature buffer, so the store has an empty one and
`learn` refuses to add domains to it (the selector could only be retrained on buffered pooled features)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import torch

from .._renamed import renamed_keyword
from ..errors import SamclError
from ..io import check_regular, quote, read_limited
from ..method.augmodule import AugModule, config_for, parameter_shapes
from ..selector import FeatureBuffer, MlpSelector, SelectorConfig, SelectorNet
from ..store.check import check_tensors
from ..store.moduleset import DomainEntry, ModuleSet, name_problem
from .unpickle import FILE_LIMIT, Record, ReferenceFileError, load_reference_file

#: The domains of the authors' `Module_Selector.pth` (their classes), in its output order (COCO: no module).
REFERENCE_DOMAINS = ("ISTD", "Kvasir", "ISIC", "cod", "camo", "COCO")
SELECTOR_FILE = "Module_Selector.pth"
#: Their selector's layers -> samcl's `SelectorNet` (features: Linear, BN, Linear, BN, ReLU, Linear, BN, ReLU).
SELECTOR_LAYERS = {"layer1": "features.0", "norm1": "features.1", "layer2": "features.2", "norm2": "features.3",
                   "layer3": "features.5", "norm3": "features.6", "layer4": "head"}
LINEAR = "torch.nn.modules.linear.Linear"
LAYER_NORM = "torch.nn.modules.normalization.LayerNorm"
EXTRA_CLASSES = ("module.SAMCL.Extra", "module.SAMCL_2.Extra")
MAX_BLOCKS = 1024  # more adapted blocks than any SAM has


def _layer(record, kind: str, what: str, path: Path) -> list[torch.Tensor]:
    """[weight, bias] of a recorded Linear / LayerNorm, as float32."""
    if not isinstance(record, Record) or record.cls_name != kind:
        found = record.cls_name if isinstance(record, Record) else type(record).__name__
        raise ReferenceFileError(f"{path}: {what} is a {found}, expected a {kind.rpartition('.')[2]}")
    params = record.parameters
    eps = record.state.get("eps", 1e-5)
    if kind == LAYER_NORM and (type(eps) not in (int, float) or eps != 1e-5):
        raise ReferenceFileError(f"{path}: {what} has eps {quote(eps)}, samcl's LayerNorms use 1e-5")
    if not all(isinstance(params.get(k), torch.Tensor) for k in ("weight", "bias")):
        raise ReferenceFileError(f"{path}: {what} lacks its weight or bias")
    return [params["weight"].float(), params["bias"].float()]


def module_tensors(obj, path: Path) -> tuple[dict[str, torch.Tensor], tuple[int, ...], dict]:
    """A module file's object -> (AugModule tensors by samcl name, adapted blocks, facts for the manifest)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("lora_layer"), (list, tuple)):
        raise ReferenceFileError(f"{path}: not one of the authors' module files (no dict with 'lora_layer')")
    blocks = tuple(obj["lora_layer"])
    if not 0 < len(blocks) <= MAX_BLOCKS or not all(isinstance(b, int) and not isinstance(b, bool) for b in blocks):
        raise ReferenceFileError(f"{path}: lora_layer {quote(list(blocks))} is not a list of block numbers")
    extra = obj.get("extra")
    if not isinstance(extra, Record) or extra.cls_name not in EXTRA_CLASSES:
        raise ReferenceFileError(f"{path}: 'extra' is not {' or '.join(EXTRA_CLASSES)}")
    per_block = [f"{kind}_{i:03d}" for i in range(len(blocks)) for kind in ("B", "norm1", "norm2")]
    unknown = sorted(set(obj) - {"lora_layer", "extra", "A", *per_block}, key=quote)
    if unknown:
        raise ReferenceFileError(f"{path}: unexpected entries {quote(unknown)} (lora_layer lists {len(blocks)} "
                                 "blocks)")
    a = _layer(obj.get("A"), LINEAR, "A", path)
    stacked = {kind: [_layer(obj.get(f"{kind}_{i:03d}"), LINEAR if kind == "B" else LAYER_NORM,
                             f"{kind}_{i:03d}", path) for i in range(len(blocks))] for kind in ("B", "norm1", "norm2")}
    parts = extra.modules
    tensors = {"a.weight": a[0], "a.bias": a[1]}
    for kind, name in (("B", "b"), ("norm1", "ln1"), ("norm2", "ln2")):
        tensors[f"{name}.weight"] = torch.stack([wb[0] for wb in stacked[kind]])
        tensors[f"{name}.bias"] = torch.stack([wb[1] for wb in stacked[kind]])
    sources = {"heat": ("layer", LINEAR), "heat_ln": ("norm", LAYER_NORM)}
    if "upward" in parts or "upward_" in parts:
        sources.update(neck_in=("upward", LINEAR), neck_out=("upward_", LINEAR))
    for name, (part, kind) in sources.items():
        tensors[f"{name}.weight"], tensors[f"{name}.bias"] = _layer(parts.get(part), kind, f"extra.{part}", path)
    facts = {"imported_from": path.name, "reference_class": extra.cls_name, "cnt": extra.state.get("cnt"),
             "tensors": 2 * (1 + 3 * len(blocks) + len(sources))}
    if not isinstance(facts["cnt"], (int, float, type(None))):
        facts["cnt"] = None
    check_tensors(tensors, path)  # the check every learned module passes: NaN or inf weights give empty masks
    return tensors, blocks, facts


def read_module(path: Path, site, parsed: tuple | None = None) -> tuple[AugModule, dict]:
    """One of their module files as an AugModule for `site` (the base's adaptation site), sizes checked.
    `parsed`: what `module_tensors` made of the file already (it is read before the base is loaded)."""
    tensors, blocks, facts = parsed or module_tensors(load_reference_file(path), path)
    rank, dim = tensors["a.weight"].shape
    if dim != site.dim:
        raise SamclError(f"{path}: its modules are {dim} wide (A is {rank}x{dim}), the base's blocks are {site.dim} "
                         "wide: SAM1 files need a SAM ViT-B base, SAM2 files a SAM 2 Hiera-T base")
    if "neck_in.weight" in tensors and not site.neck_channels:
        raise SamclError(f"{path}: its module injects heat at the neck (upward, upward_), which this base has "
                         "not (SAM 2): SAM1 files need a SAM ViT-B base")
    try:
        config = config_for(site, rank=rank, adapted_blocks=blocks, heat_mode="reference")
    except ValueError as exc:
        raise SamclError(f"{path}: lora_layer {quote(list(blocks))} does not fit the base ({str(exc)[:160]})") from None
    if "neck_in.weight" not in tensors:
        config = replace(config, neck_channels=0)
    expected = parameter_shapes(config)
    for name, shape in expected.items():
        if name not in tensors or tuple(tensors[name].shape) != shape:
            got = tuple(tensors[name].shape) if name in tensors else "nothing"
            raise SamclError(f"{path}: {name} is {got}, the base's site needs {shape}")
    facts["values"] = sum(t.numel() for t in tensors.values())
    facts["source_sha256"] = hashlib.sha256(read_limited(path, FILE_LIMIT, "module file")).hexdigest()
    return AugModule.from_tensors(config, {k: tensors[k].contiguous() for k in expected}), facts


def selector_state(obj, path: Path) -> dict[str, torch.Tensor]:
    """Their selector's state dict (or pickled module) -> `SelectorNet` state dict names."""
    if isinstance(obj, Record):  # a pickled module rather than its state dict: flatten it
        flat: dict = {}

        def walk(record: Record, prefix: str) -> None:
            for key in ("_parameters", "_buffers"):
                flat.update({f"{prefix}{k}": v for k, v in (record.state.get(key) or {}).items() if v is not None})
            for name, child in record.modules.items():
                if isinstance(child, Record):
                    walk(child, f"{prefix}{name}.")

        walk(obj, "")
        obj = flat
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ReferenceFileError(f"{path}: not a selector state dict (layer1 ... layer4)")
    state = {}
    for key, value in obj.items():
        layer, _, field = key.partition(".")
        if layer not in SELECTOR_LAYERS:
            raise ReferenceFileError(f"{path}: unexpected selector entry {key!r} (expected {', '.join(SELECTOR_LAYERS)})")
        state[f"{SELECTOR_LAYERS[layer]}.{field}"] = value.float() if value.is_floating_point() else value.long()
    check_tensors(state, path)
    return state


def read_selector(path: Path, dim: int, domains: int, state: dict | None = None) -> SelectorNet:
    """Their selector file (or `state`, what `selector_state` made of it already) as a `SelectorNet`."""
    net = SelectorNet(dim, domains)
    state = state if state is not None else selector_state(load_reference_file(path), path)
    head = state.get("head.weight")
    if head is not None and head.dim() == 2 and head.shape[0] != domains:
        problem = f"{path}: the selector has {head.shape[0]} domains, but {domains} were named"
        raise SamclError(f"{problem} (domains)", field="domains")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise SamclError(f"{path}: does not fit a selector on {dim}-wide pooled features of this base "
                         f"({' '.join(str(exc).split())[:240]})") from None
    check_selector(net.eval(), path)
    return net


#: Images of the probe batch an imported selector must route with finite outputs before anything is written.
PROBE_BATCH = 16


def check_selector(net: SelectorNet, path: Path) -> None:
    """The selector's BatchNorm statistics are sane (running variances >= 0) and its outputs on a probe batch
    (seeded normal features, the scale of a SAM block's pooled tokens) are finite: finite weights can still
    route every image to one domain with a NaN score (a variance of -1, weights of 3e38)."""
    for name, tensor in net.state_dict().items():
        if name.endswith("running_var") and bool((tensor < 0).any()):
            raise SamclError(f"{path}: {name} holds a negative variance ({float(tensor.min()):.3g}); a "
                             "BatchNorm's running variance is never negative, so this selector cannot route")
    probe = torch.randn(PROBE_BATCH, net.features[0].in_features,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = net(probe)
    if not bool(torch.isfinite(logits).all()) or not bool(torch.isfinite(torch.softmax(logits, 1)).all()):
        raise SamclError(f"{path}: the selector's outputs on a probe batch of {PROBE_BATCH} pooled features are not "
                         "finite (NaN or inf): its weights or BatchNorm statistics are out of range, so it "
                         "cannot route")


def module_files(directory: Path, domains: tuple[str, ...], selector: Path) -> dict[str, Path | None]:
    """Domain name -> its module file in `directory` (`<name>.pth`, case-insensitive) or None (no module)."""
    if not directory.is_dir():
        raise SamclError(f"{directory}: not a folder (give the folder of the authors' .pth module files)")
    found = {p.stem.lower(): p for p in sorted(directory.glob("*.pth")) if p.resolve() != selector.resolve()}
    files = {name: found.pop(name.lower(), None) for name in domains}
    if found:
        problem = (f"{directory / next(iter(found.values())).name}: not one of the selector's domains "
                   f"({', '.join(domains)}); name the domains")
        raise SamclError(f"{problem} (domains)", field="domains")
    bases = [name for name, path in files.items() if path is None]
    if len(bases) > 1:
        raise SamclError(f"{directory}: no module file for {', '.join(bases)}; only one domain (SAM without a "
                         "module, their COCO) may have none")
    if len(bases) == len(domains):
        raise SamclError(f"{directory}: holds no module file of the domains {', '.join(domains)}")
    return files


def import_reference(directory, out, base, selector=None, domains: tuple[str, ...] = REFERENCE_DOMAINS, *,
                     classes: tuple[str, ...] | None = None) -> dict:
    """Write a samcl store at `out` from the authors' module files in `directory`, their selector (default:
    `directory`/Module_Selector.pth, else the folder above), on the base `base` (a spec for `load_backbone` or
    a loaded backbone), its outputs named `domains` in order (`classes`: the old spelling, deprecated). Returns a
    report (domains, tensors, values, files)."""
    from ..store.files import ModuleStore

    domains = renamed_keyword("classes", "domains", classes, domains, default=REFERENCE_DOMAINS)
    directory, out = Path(directory), Path(out)
    for name in domains:
        problem = name_problem(name)  # the rule of learn
        if problem:
            raise SamclError(f"domains: {problem}", field="domains")
    if len(set(domains)) != len(domains):
        raise SamclError(f"domains: names a domain twice: {', '.join(domains)}", field="domains")
    if selector is None:
        candidates = [directory / SELECTOR_FILE, directory.parent / SELECTOR_FILE]
        selector = next((p for p in candidates if os.path.lexists(p)), candidates[0])
    selector = Path(selector)
    if not os.path.lexists(selector):
        raise SamclError(f"{selector}: no such selector file (give it as selector)", code="not_found",
                         field="selector")
    check_regular(selector, "selector file")  # a fifo or a device: said so, never waited on
    files = module_files(directory, domains, selector)
    store = ModuleStore(out)
    if store.exists():
        raise SamclError(f"{out}: a store already exists here; import into a new folder")
    # every file read and checked before the base model loads: a bad file is named in a second
    parsed = {name: module_tensors(load_reference_file(path), path) for name, path in files.items() if path}
    selector_tensors = selector_state(load_reference_file(selector), selector)
    from ..backbone import load_backbone  # (transformers: imported once the files are known to be good)
    from ..backbone.base import FrozenBackbone

    backbone = base if isinstance(base, FrozenBackbone) else load_backbone(base)
    site = backbone.site
    block = backbone.default_selector_block
    modules, facts = {}, {}
    for name, path in files.items():
        if path is not None:
            modules[name], facts[name] = read_module(path, site, parsed[name])
    configs = {m.config for m in modules.values()}
    if len(configs) > 1:
        raise SamclError(f"{directory}: the module files differ in rank or adapted blocks; a store holds one kind")
    config = configs.pop()
    if block >= min(config.adapted_blocks):
        raise SamclError(f"{directory}: the modules adapt block {min(config.adapted_blocks)}, not after the "
                         f"selector block {block} of this base")
    net = read_selector(selector, site.dim, len(domains), selector_tensors)
    source = backbone.source
    config_mlp = SelectorConfig(kind="mlp", block=block)  # theirs is the paper's MLP, on the mean-pooled block
    state = ModuleSet(backbone=backbone.identity(), selector_config=config_mlp, selector_block=block,
                      aug_config=config, base_hint=(source or {}).get("base"), base_source=source)
    for name in domains:
        kind = "module" if name in modules else "no_module"
        info = {**facts.get(name, {}), "selector": selector.name, "heat_mode": "reference"}
        state.domains.append(DomainEntry(name=name, kind=kind, info=info))
    state.modules = modules
    state.selector = MlpSelector(config_mlp, site.dim, net, FeatureBuffer(site.dim))  # no buffer: learn refuses
    with store.lock():
        store.save(state)
    return {"store": str(out), "domains": list(domains),
            "without_module": next((n for n in domains if n not in modules), None),
            "modules": {n: {"file": str(files[n]), "tensors": f["tensors"], "values": f["values"]}
                        for n, f in facts.items()},
            "values_per_module": config.num_parameters, "adapted_blocks": list(config.adapted_blocks),
            "selector": {"file": str(selector), "block": block, "domains": len(domains)}, "heat_mode": "reference"}

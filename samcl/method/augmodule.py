"""AugModule: SLoRA (LoRA with one shared down-projection) plus Prompt Augmentation (heat features).

For adapted block i with attention input x (after the block's own norm), the attention output becomes

    attn(x) + B_i( LN1_i(A x) + LN2_i(H) )

where H = ReLU(LN(Linear_r(heat repeated to r channels))) is the prompt feature map at the same token
positions. Around the neck: neck(x + U_D(H)) + U_out(H). B_i, U_D and U_out start at zero, so a fresh
module reproduces the base model exactly.

Variants, for ablations and baselines, are configuration of the same math (`AugModuleConfig`):
`shared_down=False` gives every adapted block its own down-projection A_i (plain LoRA instead of SLoRA);
`prompt_augmentation=False` drops H and everything that reads it (LN2, the heat features, the neck
injection); `target="qkv"` is LoRA as PEFT applies it to the attention's qkv projection,
qkv(x) + B_i A_i x (A_i Kaiming-uniform, B_i zero, no bias, no LayerNorm, scaling alpha / r = 1).

All math here is written for *grouped* parameters: every tensor carries a leading group dimension G that
is either 1 (one module for the whole batch) or B (one module per sample, a mixed-domain batch). A zero
parameter set is the "base" choice: it adds exactly nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BeforeValidator, Field
from torch import nn

from ..options import config, option
from .sizes import tensor_bytes

LN_EPS = 1e-5
TARGETS = ("attention", "qkv")
#: "samcl": the heat lies on the tokens at the prompt, in every block and at the neck (everything samcl learns).
#: "reference": the authors' forward, for modules imported from their files only (`samcl.reference`).
HEAT_MODES = ("samcl", "reference")


def _block_indices(blocks):
    """Block indices as a tuple of ints (a list, a range, numpy's integers); anything else is left to refuse."""
    if isinstance(blocks, (list, tuple, range)) and all(not isinstance(b, (bool, str, float)) for b in blocks):
        try:
            return tuple(int(b) for b in blocks)
        except (TypeError, ValueError):
            pass
    return blocks


@config(frozen=True)
class AugModuleConfig:
    """Sizes of one AugModule. Every number comes from the backbone's adaptation site (see `config_for`).

    dim: token width D at the adapted blocks. rank: r. adapted_blocks: encoder block indices that get SLoRA.
    neck_channels: channels of the image embedding (0 = no neck injection, as for SAM 2).
    shared_down: one down-projection A for all adapted blocks (SLoRA); False: one A_i per block (plain LoRA).
    prompt_augmentation: the heat features H (into every adapted block and around the neck); False: none.
    target: "attention" (the delta is added to the attention output, as SAMCL) or "qkv" (PEFT-style LoRA on
    the attention's qkv projection: per-block A_i, B_i, nothing else).
    """

    dim: int = option(help="token width D at the adapted blocks", low=1, integer=True)
    adapted_blocks: Annotated[tuple[int, ...], BeforeValidator(_block_indices)] = Field(
        description="encoder block indices that get SLoRA (at least one, each once)", strict=True)
    neck_channels: int = option(help="channels of the image embedding (0: no neck injection)", low=0, integer=True)
    rank: int = option(10, "the rank r", low=1, integer=True)
    neck_dim: int = option(0, "token width entering the neck (0: dim)", low=0, integer=True)
    shared_down: bool = option(True, "one down-projection A for all adapted blocks (SLoRA)", choices=(True, False))
    prompt_augmentation: bool = option(True, "the heat features H", choices=(True, False))
    target: str = option("attention", "where the delta goes: the attention output or the qkv projection",
                         choices=TARGETS)
    heat_mode: str = option("samcl", "samcl's heat, or the authors' forward (imported modules)", choices=HEAT_MODES)

    def __post_init__(self):
        if not self.neck_dim:
            object.__setattr__(self, "neck_dim", self.dim)
        if not self.adapted_blocks or len(set(self.adapted_blocks)) != len(self.adapted_blocks):
            raise ValueError(f"AugModuleConfig.adapted_blocks {list(self.adapted_blocks)}: expected at least one "
                             "block, each once")
        if self.target == "qkv" and (self.shared_down or self.prompt_augmentation):
            raise ValueError("a qkv LoRA has one A per block and no prompt augmentation "
                             "(shared_down=False, prompt_augmentation=False)")
        if self.heat_mode == "reference" and not (self.prompt_augmentation and self.target == "attention"):
            raise ValueError("the reference heat mode is the authors' SLoRA with prompt augmentation")

    @property
    def has_neck(self) -> bool:
        """Whether the module injects H around the neck (only H reaches the neck)."""
        return bool(self.neck_channels) and self.prompt_augmentation and self.target == "attention"

    def to_dict(self) -> dict:
        """Every field (the manifest's format version 2 writes them all)."""
        return {**asdict(self), "adapted_blocks": list(self.adapted_blocks)}

    @classmethod
    def from_dict(cls, data: dict) -> "AugModuleConfig":
        return cls(**{k: (tuple(v) if k == "adapted_blocks" else v) for k, v in data.items()})

    @property
    def num_parameters(self) -> int:
        return sum(math.prod(shape) for shape in parameter_shapes(self).values())

    @property
    def num_layernorm_parameters(self) -> int:
        return sum(math.prod(s) for name, s in parameter_shapes(self).items() if "ln" in name)


def config_for(site, rank: int = 10, adapted_blocks: tuple[int, ...] | None = None, **variant) -> AugModuleConfig:
    """The AugModule for a backbone's `AdaptationSite` (`backbone.site`): its width, neck and blocks (default:
    the site's default blocks, those after the selector block). `variant`: other AugModuleConfig fields."""
    blocks = tuple(site.default_blocks if adapted_blocks is None else adapted_blocks)
    wrong = [b for b in blocks if b not in site.blocks]
    if wrong:
        raise ValueError(f"adapted blocks must lie in {site.blocks[0]}..{site.blocks[-1]} (blocks this backbone can "
                         f"adapt, on the heat's token grid); got {wrong}")
    return AugModuleConfig(dim=site.dim, adapted_blocks=blocks, neck_channels=site.neck_channels, rank=rank,
                           neck_dim=site.neck_dim, **variant)


def parameter_shapes(config: AugModuleConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every AugModule tensor (block-wise tensors stacked over the adapted blocks)."""
    r, d, n = config.rank, config.dim, len(config.adapted_blocks)
    if config.target == "qkv":
        return {"a.weight": (n, r, d), "b.weight": (n, 3 * d, r)}
    per_block = () if config.shared_down else (n,)
    shapes = {
        "a.weight": (*per_block, r, d), "a.bias": (*per_block, r),
        "b.weight": (n, d, r), "b.bias": (n, d),
        "ln1.weight": (n, r), "ln1.bias": (n, r),
    }
    if config.prompt_augmentation:
        shapes.update({
            "ln2.weight": (n, r), "ln2.bias": (n, r),
            "heat.weight": (r, r), "heat.bias": (r,),
            "heat_ln.weight": (r,), "heat_ln.bias": (r,),
        })
    if config.has_neck:
        shapes.update({
            "neck_in.weight": (config.neck_dim, r), "neck_in.bias": (config.neck_dim,),
            "neck_out.weight": (config.neck_channels, r), "neck_out.bias": (config.neck_channels,),
        })
    return shapes


class AugModule(nn.Module):
    """The trainable parameters of one domain. `params()` gives them grouped (G = 1) for the math below."""

    def __init__(self, config: AugModuleConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        self.weights = nn.ParameterDict({
            _key(name): nn.Parameter(torch.zeros(shape)) for name, shape in parameter_shapes(config).items()
        })
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Kaiming-uniform A and heat Linear (as nn.Linear), LayerNorms at (1, 0), every up-projection zero."""
        for name, param in self.named_tensors().items():
            if name in ("a.weight", "heat.weight"):
                bound = 1.0 / math.sqrt(param.shape[-1])  # fan-in (per-block A: n x r x D)
                param.uniform_(-bound, bound, generator=generator)
            elif name in ("a.bias", "heat.bias"):
                bound = 1.0 / math.sqrt(self.named_tensors()[name.replace("bias", "weight")].shape[-1])
                param.uniform_(-bound, bound, generator=generator)
            elif "ln" in name and name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()

    def named_tensors(self) -> dict[str, nn.Parameter]:
        return {_name(k): v for k, v in self.weights.items()}

    def params(self) -> dict[str, torch.Tensor]:
        """Grouped view (leading G = 1) for `heat_features`, `slora_delta` and the neck functions."""
        return {name: t.unsqueeze(0) for name, t in self.named_tensors().items()}

    def forward(self) -> dict[str, torch.Tensor]:
        """The grouped parameters; a forward so that wrappers such as DistributedDataParallel see the use."""
        return self.params()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {name: t.detach() for name, t in self.named_tensors().items()}

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        _check_tensors(self.config, tensors)
        for name, param in self.named_tensors().items():
            param.copy_(tensors[name].to(param.dtype))

    @classmethod
    def from_tensors(cls, config: AugModuleConfig, tensors: dict[str, torch.Tensor]) -> "AugModule":
        """A frozen module whose parameters are `tensors` themselves: no initialisation and no copy, the fast
        way to open a thousand saved modules (`__init__` would draw random weights only to overwrite them)."""
        _check_tensors(config, tensors)
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.config = config
        module.weights = nn.ParameterDict({_key(name): nn.Parameter(tensors[name], requires_grad=False)
                                           for name in parameter_shapes(config)})
        return module

    @property
    def num_bytes(self) -> int:
        return tensor_bytes(list(self.parameters()))


def _check_tensors(config: AugModuleConfig, tensors: dict[str, torch.Tensor]) -> None:
    expected = parameter_shapes(config)
    if set(tensors) != set(expected):
        raise ValueError(f"module tensors {sorted(tensors)} do not match the config's {sorted(expected)}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"module tensor {name} has shape {tuple(tensors[name].shape)}, expected {shape}")


def _key(name: str) -> str:  # ParameterDict keys cannot contain dots
    return name.replace(".", "__")


def _name(key: str) -> str:
    return key.replace("__", ".")


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x: B x N x in; weight: G x out x in; bias: G x out -> B x N x out (G broadcasts over B)."""
    return torch.matmul(x, weight.transpose(-1, -2)) + bias.unsqueeze(-2)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x: B x N x C; weight, bias: G x C."""
    # int(): a plain size, so that an ONNX trace (`samcl.runtime.graphs`) records the width as a constant
    return F.layer_norm(x, (int(x.shape[-1]),), eps=LN_EPS) * weight.unsqueeze(-2) + bias.unsqueeze(-2)


def heat_features(params: dict[str, torch.Tensor], heat: torch.Tensor) -> torch.Tensor:
    """heat: B x N (one value per token, N = grid cells) -> H: B x N x r = ReLU(LN(Linear(heat repeated r times)))."""
    rank = params["heat.weight"].shape[-1]
    repeated = heat.unsqueeze(-1).expand(*heat.shape, rank)
    return F.relu(_layer_norm(_linear(repeated, params["heat.weight"], params["heat.bias"]),
                              params["heat_ln.weight"], params["heat_ln.bias"]))


def slora_delta(params: dict[str, torch.Tensor], slot: int, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
    """Adapter output for the `slot`-th adapted block. x: B x N x D (attention input), h: B x N x r (None: no
    prompt augmentation) -> B x N x D. A is shared (G x r x D) or per block (G x n x r x D)."""
    weight, bias = params["a.weight"], params["a.bias"]
    if weight.dim() == 4:
        weight, bias = weight[:, slot], bias[:, slot]
    down = _layer_norm(_linear(x, weight, bias), params["ln1.weight"][:, slot], params["ln1.bias"][:, slot])
    if h is not None:
        down = down + _layer_norm(h, params["ln2.weight"][:, slot], params["ln2.bias"][:, slot])
    return _linear(down, params["b.weight"][:, slot], params["b.bias"][:, slot])


def qkv_lora_delta(params: dict[str, torch.Tensor], slot: int, x: torch.Tensor) -> torch.Tensor:
    """PEFT-style LoRA on a qkv projection: B_i A_i x. x: B' x ... x D where B' is a multiple of the group
    count G (windowed attention: each sample's windows are consecutive) -> B' x ... x 3D."""
    groups = params["a.weight"].shape[0]
    flat = x.reshape(groups, -1, x.shape[-1])  # G x (tokens of the group's samples) x D
    down = torch.matmul(flat, params["a.weight"][:, slot].transpose(-1, -2))
    up = torch.matmul(down, params["b.weight"][:, slot].transpose(-1, -2))
    return up.reshape(*x.shape[:-1], up.shape[-1])


def neck_input(params: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """U_D(H): B x N x r -> B x N x D (added to the tokens entering the neck)."""
    return _linear(h, params["neck_in.weight"], params["neck_in.bias"])


def neck_output(params: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """U_out(H): B x N x r -> B x N x C (added to the neck's output)."""
    return _linear(h, params["neck_out.weight"], params["neck_out.bias"])


@dataclass
class AugModuleSize:
    """Size report: parameters and bytes, with and without LayerNorms (the paper counts without)."""

    parameters: int
    layernorm_parameters: int
    bytes: int
    bytes_without_layernorm: int
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, config: AugModuleConfig, bytes_per_value: int = 4) -> "AugModuleSize":
        p, ln = config.num_parameters, config.num_layernorm_parameters
        return cls(p, ln, p * bytes_per_value, (p - ln) * bytes_per_value)


def window_picture(heat: torch.Tensor, window: int) -> torch.Tensor:
    """The reference's heat in a windowed block: the whole map (B x rows x cols) resized (nearest, as
    F.interpolate and cv2.INTER_NEAREST: source cell floor(i * rows / window)) to window x window, the same
    picture in every window (tokens padded to whole windows, as attention pads them) -> B x rows x cols."""
    rows, cols = heat.shape[1:]
    small = F.interpolate(heat[:, None], size=(window, window), mode="nearest")[:, 0]
    return small.repeat(1, -(-rows // window), -(-cols // window))[:, :rows, :cols]


class Injection:
    """An AugModule (or a per-sample stack of them) bound to one batch's heat: the backbone's `Adapter`.

    params: grouped tensors (G = 1 or B); heat: B x rows x cols on the adapted blocks' token grid (row = y).
    In the "reference" heat mode H goes where the authors' code puts it: on the tokens in global-attention blocks
    (their permute), their untransposed map (row = x) resized to one window and repeated in windowed blocks,
    and their untransposed map at the neck (see `render_reference_heat` and shared/SAMCL.md's defects).
    """

    def __init__(self, config: AugModuleConfig, params: dict[str, torch.Tensor], heat: torch.Tensor):
        self.config = config
        self.params = params
        self.slots = {block: slot for slot, block in enumerate(config.adapted_blocks)}
        self.reference = config.heat_mode == "reference"
        self.heat = heat.to(params["a.weight"].dtype)
        self.features = None  # B x N x r
        self._windowed: dict[int, torch.Tensor] = {}
        #: The module's math runs in its parameters' dtype (float32) whatever the encoder's precision: it is
        #: under 1 % of a block's work, and its small deltas keep their precision.
        self.dtype = params["a.weight"].dtype
        if config.prompt_augmentation:
            self.features = heat_features(params, self.heat.flatten(1))

    def _features_in(self, window: int) -> torch.Tensor | None:
        """H as the block with this window size (0: global attention) receives it."""
        if not self.reference or window <= 0 or self.features is None:
            return self.features
        if window not in self._windowed:
            raw = self.heat.transpose(1, 2)  # their array: row = x
            self._windowed[window] = heat_features(self.params, window_picture(raw, window).flatten(1))
        return self._windowed[window]

    def block_delta(self, block: int, x: torch.Tensor, window: int = 0) -> torch.Tensor | None:
        """x: B x N x D attention input of encoder block `block` (window: its attention window, 0 = global)
        -> B x N x D, or None if not adapted."""
        slot = self.slots.get(block)
        if slot is None or self.config.target != "attention":
            return None
        return slora_delta(self.params, slot, x.to(self.dtype), self._features_in(window))  # in the module's dtype

    def adapts_qkv(self, block: int) -> bool:
        return self.config.target == "qkv" and block in self.slots

    def qkv_delta(self, block: int, x: torch.Tensor) -> torch.Tensor | None:
        """x: the qkv projection's input in block `block` (B' x ... x D) -> the LoRA term to add to its output."""
        if not self.adapts_qkv(block):
            return None
        return qkv_lora_delta(self.params, self.slots[block], x.to(self.dtype))

    def neck_deltas(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(U_D(H): B x N x D into the neck, U_out(H): B x N x C onto its output), or (None, None)."""
        if not self.config.has_neck:
            return None, None
        h = self.features
        if self.reference:  # their map as it is: transposed relative to the tokens
            h = heat_features(self.params, self.heat.transpose(1, 2).flatten(1))
        return neck_input(self.params, h), neck_output(self.params, h)

"""The benchmark's methods by name: what each is and which module family its first step trains. Torch-free, so
`samcl benchmark --help` lists them without loading any model code; `methods` builds each one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    description: str
    family: str | None  # module trained in the first step (shares the learning-rate choice); None: no training


METHODS: dict[str, Method] = {
    "zero-shot": Method("the base SAM, never adapted", None),
    "sequential": Method("one AugModule fine-tuned on the domains in turn", "augmodule"),
    "sequential-lora": Method("one LoRA on the attention qkv (as PEFT), fine-tuned in turn", "lora-qkv"),
    "ewc": Method("sequential AugModule + EWC (diagonal Fisher per domain)", "augmodule"),
    "lwf": Method("sequential AugModule + distillation to the previous module (LwF)", "augmodule"),
    "replay": Method("sequential AugModule + image replay, stated byte budget", "augmodule"),
    "replay-matched": Method("image replay with SAMCL's storage in bytes", "augmodule"),
    "o-lora": Method("a new qkv LoRA per domain, orthogonal to the earlier ones, summed", "lora-qkv"),
    "samcl": Method("SAMCL: one AugModule per domain + Module Selector (the default kind, fecam)", "augmodule"),
    "samcl-mlp": Method("SAMCL with the paper's selector: an MLP retrained on a feature buffer", "augmodule"),
    "samcl-mlp-std": Method("SAMCL with the paper's MLP selector given the pooled mean + spread (not the paper's "
                            "input; no open set)", "augmodule"),
    "samcl-ncm": Method("SAMCL with a nearest-class-mean selector (+ open-set fallback)", "augmodule"),
    "samcl-ranpac": Method("SAMCL with a RanPAC selector (random projection + ridge, + open-set fallback)",
                           "augmodule"),
    "samcl-lora": Method("SAMCL ablation: plain LoRA (one A per block) instead of SLoRA", "augmodule-per-block-a"),
    "samcl-noprompt": Method("SAMCL ablation: no prompt augmentation", "augmodule-no-prompt"),
    "samcl-oracle": Method("SAMCL ablation: oracle selection (true domain's module)", "augmodule"),
    "joint": Method("upper bound: a fresh AugModule on all domains so far", "augmodule"),
}

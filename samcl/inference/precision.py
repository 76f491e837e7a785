"""Inference precision: the names, what this machine does natively, and what "auto" picks. No torch import
(the CLI's `--help` and `samcl info` read this without loading model code).

    float32    every weight and activation in float32 (the reference behaviour; training always uses it)
    bfloat16   the frozen image encoder's weights cast to bfloat16 once at load, its activations in bfloat16;
               the AugModule's math, the pooled selector features, the selector, the prompt encoder and the mask
               decoder stay in float32 (see `samcl.backbone.base.FrozenBackbone.set_precision`)

bfloat16 is only fast where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); without it PyTorch
emulates it and runs several times slower than float32 (measured: `benchmarks/latency.py --precision`).
"""

from __future__ import annotations

from pathlib import Path

PRECISIONS = ("float32", "bfloat16")
CHOICES = ("auto", *PRECISIONS)

#: CPU flags (Linux /proc/cpuinfo) of native bfloat16 matrix arithmetic.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")

#: Whether "auto" picks bfloat16 on a CPU with native bfloat16. It keeps quality on every check
#: (benchmarks/precision_quality.py: selector decisions identical on 100 % of the embedded suite's 700 test images,
#: IoU within 0.03 point per domain); CPUs without native bfloat16 run it slower than float32, so they keep float32.
AUTO_BF16 = True


def _cpuinfo_value(cpuinfo: str | Path, keys: tuple[str, ...]) -> str | None:
    """The first CPU's value of the first of `keys` in a Linux /proc/cpuinfo (None where the file or key is absent)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in keys:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The first CPU's feature flags (empty where the file is absent: not Linux)."""
    return set((_cpuinfo_value(cpuinfo, ("flags", "Features")) or "").split())


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows: what benchmarks name with a timing."""
    import platform

    return _cpuinfo_value(cpuinfo, ("model name",)) or platform.processor() or platform.machine()


def native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Does this CPU multiply bfloat16 natively (AVX512-BF16 or AMX-BF16)?"""
    return any(flag in cpu_flags(cpuinfo) for flag in BF16_FLAGS)


def resolve(name: str | None, device: str | None = None) -> str:
    """A precision name or "auto"/None -> "float32" or "bfloat16". auto: bfloat16 on a CPU with native bfloat16
    when `AUTO_BF16` says the measurements allow it, float32 everywhere else (CUDA included: not measured)."""
    if name in PRECISIONS:
        return name
    if name not in (None, "auto"):
        raise ValueError(f"precision {name!r}: expected one of {', '.join(CHOICES)}")
    on_cpu = device is None or str(device) == "cpu"
    if on_cpu and device is None:
        try:  # the default device is CUDA where one is visible; torch is already imported when this matters
            import sys
            torch = sys.modules.get("torch")
            on_cpu = torch is None or not torch.cuda.is_available()
        except Exception:  # pragma: no cover - a broken CUDA setup: treat as CPU
            on_cpu = True
    return "bfloat16" if AUTO_BF16 and on_cpu and native_bf16() else "float32"


def describe_auto() -> str:
    """One line for `--help` and `samcl info`: what auto picks on this machine, and why."""
    native = native_bf16()
    cpu = "this CPU has native bfloat16" if native else "this CPU has no native bfloat16 (no avx512_bf16/amx_bf16)"
    if AUTO_BF16:
        return f"auto: bfloat16 on CPUs with native bfloat16 (avx512_bf16/amx_bf16), else float32; {cpu}"
    return f"auto: float32 (bfloat16 is opt-in); {cpu}"

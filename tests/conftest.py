"""Shared fixtures: tiny SAM configs built in memory (no weights are downloaded anywhere in the tests)."""

from __future__ import annotations

import pytest
import torch

from samcl.backbone import SamBackbone

#: The `auto` settings as shipped, before the session's fixtures below pin them (`shipped_auto_settings` restores).
SHIPPED: dict = {}


def tiny_sam_config(image_size: int = 64, patch: int = 8, hidden: int = 32, depth: int = 4,
                    window: int = 3, global_blocks=(1, 3), channels: int = 32) -> dict:
    """A SamConfig dict small enough for CPU tests; windows do not divide the grid, so padding is exercised."""
    return {
        "vision_config": {
            "image_size": image_size, "patch_size": patch, "hidden_size": hidden, "num_hidden_layers": depth,
            "num_attention_heads": 2, "window_size": window, "global_attn_indexes": list(global_blocks),
            "output_channels": channels, "mlp_dim": hidden * 2, "num_pos_feats": channels // 2,
            "initializer_range": 0.02,
        },
        "prompt_encoder_config": {"image_size": image_size, "patch_size": patch, "hidden_size": channels},
        "mask_decoder_config": {"hidden_size": channels, "mlp_dim": channels * 2, "num_attention_heads": 2,
                                "iou_head_hidden_dim": channels},
    }


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is faster than two, and many times faster when cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def float32_auto_precision():
    """`--precision auto` picks bfloat16 on CPUs with native bfloat16; tests compare the CLI's results with the
    API's float32 ones at 1e-5, so auto means float32 here whatever CPU runs them (tests/test_precision.py pins
    the rule itself)."""
    from samcl.inference import precision

    saved, precision.AUTO_BF16 = precision.AUTO_BF16, False
    SHIPPED["AUTO_BF16"] = saved
    yield
    precision.AUTO_BF16 = saved


@pytest.fixture(scope="session", autouse=True)
def torch_auto_runtime(tmp_path_factory):
    """`--runtime auto` picks OpenVINO where it is installed; tests compare the CLI's results with the API's torch
    ones, so auto means torch here (tests/test_runtime.py pins the rule), and exported graphs go to a cache of the
    session's own, never the user's."""
    import os

    from samcl import runtime

    saved, runtime.AUTO_ORDER = runtime.AUTO_ORDER, ("torch",)
    SHIPPED["AUTO_ORDER"] = saved
    cache, os.environ["SAMCL_CACHE_DIR"] = os.environ.get("SAMCL_CACHE_DIR"), str(tmp_path_factory.mktemp("cache"))
    yield
    runtime.AUTO_ORDER = saved
    if cache is None:
        os.environ.pop("SAMCL_CACHE_DIR", None)
    else:
        os.environ["SAMCL_CACHE_DIR"] = cache


@pytest.fixture
def shipped_auto_settings(monkeypatch):
    """For one test, `--precision auto` and `--runtime auto` pick as shipped (bfloat16 on a CPU with native bfloat16,
    OpenVINO where installed), not the session's float32 on torch: each front end runs them in at least one test."""
    from samcl import runtime
    from samcl.inference import precision

    monkeypatch.setattr(precision, "AUTO_BF16", SHIPPED["AUTO_BF16"])
    monkeypatch.setattr(runtime, "AUTO_ORDER", SHIPPED["AUTO_ORDER"])
    return {"precision": precision.resolve("auto", None), "runtime": runtime.resolve("auto", None)}


@pytest.fixture(scope="session")
def tiny_backbone() -> SamBackbone:
    backbone = SamBackbone.from_config(tiny_sam_config(), seed=0)
    with torch.no_grad():  # non-zero position embeddings, so misplaced tokens would show
        for name, param in backbone.model.named_parameters():
            if "pos_embed" in name or "rel_pos" in name:
                param.normal_(0, 0.02)
    return backbone


@pytest.fixture
def empty_store(tmp_path):
    """A fresh store on builtin:tiny-sam, no domain learned (what the Label Studio recordings ran on)."""
    from samcl import SAMCL, load_backbone

    samcl = SAMCL.create(load_backbone("builtin:tiny-sam"), tmp_path / "store")
    with samcl.store.lock():
        samcl.store.save(samcl.module_set)
    return tmp_path / "store"

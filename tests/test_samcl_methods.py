"""The narrow `SAMCL` methods the front ends use instead of reaching into its engine or module set."""

from __future__ import annotations

import pytest
from helpers import toy_samples

from samcl import SAMCL, SamclError, SelectorConfig, TrainConfig
from samcl.method import AugModule

FAST = TrainConfig(epochs=1, batch_size=2, progress=False)


def test_configure_modules_sets_the_config_of_what_is_learned_and_only_before_it(tiny_backbone):
    samcl = SAMCL.create(tiny_backbone, None, selector=SelectorConfig(samples_per_domain=4, epochs=2))
    samcl.configure_modules(shared_down=False)
    assert samcl.aug_config.shared_down is False
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), FAST)
    assert samcl.module_set.modules["red"].config.shared_down is False
    with pytest.raises(SamclError, match="holds domains already") as refused:
        samcl.configure_modules(shared_down=True)
    assert refused.value.code == "not_empty"


def test_put_module_puts_a_module_trained_elsewhere_in_the_set(tiny_backbone):
    samcl = SAMCL.create(tiny_backbone, None)
    module = AugModule(samcl.aug_config)
    samcl.put_module("adapter", module)
    assert samcl.domains == ["adapter"] and samcl.module_set.modules["adapter"] is module
    samcl.put_module("adapter", AugModule(samcl.aug_config))  # replaced, not added twice
    assert samcl.domains == ["adapter"]


def test_keep_in_memory_learns_without_saving(tiny_backbone, tmp_path):
    samcl = SAMCL.create(tiny_backbone, tmp_path / "s", selector=SelectorConfig(samples_per_domain=4, epochs=2))
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), FAST)
    saved = (tmp_path / "s" / "manifest.json").read_bytes()
    samcl.keep_in_memory()
    samcl.learn("blue", toy_samples(4, (30, 30, 200), 1), FAST)
    assert samcl.domains == ["red", "blue"] and (tmp_path / "s" / "manifest.json").read_bytes() == saved

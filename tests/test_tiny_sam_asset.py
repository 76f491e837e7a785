"""The tiny SAM shipped with the package loads offline and stays small."""

from pathlib import Path

import samcl

ASSET = Path(samcl.__file__).parent / "assets" / "tiny-sam"


def test_shipped_tiny_sam_loads_offline_and_is_at_most_10_mb():
    from transformers import SamModel

    assert (ASSET / "model.safetensors").stat().st_size <= 10 * 2**20
    model = SamModel.from_pretrained(ASSET, local_files_only=True)
    assert model.config.vision_config.image_size == 128

"""The "reference" heat mode reproduces the authors' forward, each point checked independently of samcl's code:
their heat (against OpenCV itself and against explicit loops), its placement in global and windowed blocks and
at the neck (per-token loops), the stretched input, and the selector's pooled features of the stretched image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_sam_config
from PIL import Image
from reference_files import write_reference_dir

from samcl import SAMCL, Prompt
from samcl.backbone import SamBackbone
from samcl.backbone.sam import PIXEL_MEAN, PIXEL_STD
from samcl.cli import main
from samcl.inference import InputPrompt
from samcl.method import AugModule, AugModuleConfig, Injection
from samcl.method.augmodule import heat_features, neck_input, slora_delta
from samcl.method.prompts import render_reference_heat

GRID, WINDOW = 64, 14
KERNEL = [4, 13, 30, 51, 60, 51, 30, 13, 4]  # /256: OpenCV's getGaussianKernel(9, 0)


def their_impulses(points) -> np.ndarray:
    """Their array: 1 added at [int(x * 64 / 1024)][int(y * 64 / 1024)] per point (row = x)."""
    array = np.zeros((GRID, GRID))
    for x, y in points:
        array[int(x * 64 / 1024)][int(y * 64 / 1024)] += 1
    return array


def blur_by_loops(array: np.ndarray) -> np.ndarray:
    """9 x 9 Gaussian by explicit loops, borders as OpenCV's BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba)."""
    n = array.shape[0]

    def reflect(i: int) -> int:
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    out = np.zeros_like(array)
    for p, q in zip(*np.nonzero(np.ones_like(array))):
        out[p, q] = sum(KERNEL[a] * KERNEL[b] * array[reflect(p + a - 4), reflect(q + b - 4)]
                        for a in range(9) for b in range(9)) / 256**2
    return out


POINTS = [(3.0, 1000.0), (515.9, 300.2), (520.0, 310.0), (1023.0, 1023.0), (100.0, 40.0), (0.0, 700.0)]
LABELS = [1, 0, 1, 1, 0, -10]  # negative points add heat too; the last is a batch's padding


def ours(points=POINTS, labels=LABELS) -> np.ndarray:
    return render_reference_heat(torch.tensor([points]), torch.tensor([labels]), (GRID, GRID), 16.0)[0].numpy()


def test_heat_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    expected = cv2.GaussianBlur(their_impulses(POINTS[:-1]), (9, 9), 0) * 255
    np.testing.assert_allclose(ours(), expected.T, atol=1e-4)  # ours lies on the tokens: their array transposed


def test_heat_matches_explicit_loops():
    expected = blur_by_loops(their_impulses(POINTS[:-1])) * 255
    np.testing.assert_allclose(ours(), expected.T, atol=1e-4)
    single = ours([(520.0, 200.0)], [1])
    assert single.max() == pytest.approx(255 * (60 / 256) ** 2, abs=1e-4)  # 14.008, "peak about 14"
    assert np.unravel_index(single.argmax(), single.shape) == (200 // 16, 520 // 16)  # row = y on the tokens
    same_cell = ours([(520.0, 200.0), (521.0, 201.0)], [1, 1])
    np.testing.assert_allclose(same_cell, 2 * single, atol=1e-4)  # overlapping points are summed


@pytest.fixture(scope="module")
def injection():
    torch.manual_seed(0)
    config = AugModuleConfig(dim=16, adapted_blocks=(1, 2), neck_channels=8, rank=4, heat_mode="reference")
    module = AugModule(config)
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0, 0.5)
    heat = torch.rand(2, GRID, GRID) * 14
    return Injection(config, module.params(), heat), module.params(), heat


def per_token(heat: torch.Tensor, value) -> torch.Tensor:
    """B x N heat, token (r, c) -> value(b, r, c), by explicit loops."""
    out = torch.zeros(heat.shape[0], GRID * GRID)
    for b in range(heat.shape[0]):
        for r in range(GRID):
            for c in range(GRID):
                out[b, r * GRID + c] = value(b, r, c)
    return out


def test_global_block_heat_lies_on_the_tokens(injection):
    inj, params, heat = injection
    x = torch.randn(2, GRID * GRID, 16)
    tokens = per_token(heat, lambda b, r, c: heat[b, r, c])
    expected = slora_delta(params, 0, x, heat_features(params, tokens))
    torch.testing.assert_close(inj.block_delta(1, x, 0), expected)


def test_windowed_block_gets_their_map_resized_to_one_window_in_every_window(injection):
    inj, params, heat = injection
    x = torch.randn(2, GRID * GRID, 16)
    # their array (row = x) resized nearest to 14 x 14: cell i of the window reads cell int(i * 64 / 14)
    tokens = per_token(heat, lambda b, r, c: heat[b, int(c % WINDOW * GRID / WINDOW), int(r % WINDOW * GRID / WINDOW)])
    expected = slora_delta(params, 1, x, heat_features(params, tokens))
    torch.testing.assert_close(inj.block_delta(2, x, WINDOW), expected)
    assert not torch.allclose(inj.block_delta(2, x, WINDOW), inj.block_delta(2, x, 0))


def test_neck_heat_is_transposed(injection):
    inj, params, heat = injection
    into, out = inj.neck_deltas()
    tokens = per_token(heat, lambda b, r, c: heat[b, c, r])
    torch.testing.assert_close(into, neck_input(params, heat_features(params, tokens)))
    assert out.shape == (2, GRID * GRID, 8)


def test_backbone_tells_the_adapter_each_blocks_window():
    backbone = SamBackbone.from_config(tiny_sam_config(image_size=256, patch=4, hidden=16, depth=4, window=WINDOW,
                                                       global_blocks=(1, 3), channels=16), seed=0)
    config = AugModuleConfig(dim=16, adapted_blocks=(1, 2, 3), neck_channels=16, rank=4, heat_mode="reference")
    seen = []

    class Spy(Injection):
        def block_delta(self, block, x, window=0):
            seen.append((block, window, x.shape[1]))
            return super().block_delta(block, x, window)

    spy = Spy(config, AugModule(config).params(), torch.rand(1, GRID, GRID))
    with torch.no_grad():
        backbone.suffix(backbone.prefix(torch.randn(1, 3, 256, 256), 0), 1, spy)
    assert seen == [(1, 0, GRID * GRID), (2, WINDOW, GRID * GRID), (3, 0, GRID * GRID)]


def test_stretched_input_has_no_aspect_ratio_and_no_padding(tiny_backbone):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    tensor, geometry = tiny_backbone.preprocess(image, stretch=True)
    size = tiny_backbone.image_size
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    expected = (torch.from_numpy(resized).permute(2, 0, 1) - torch.tensor(PIXEL_MEAN).view(3, 1, 1)) \
        / torch.tensor(PIXEL_STD).view(3, 1, 1)
    torch.testing.assert_close(tensor, expected)
    torch.testing.assert_close(geometry.coords_to_input(np.array([[50.0, 30.0], [25.0, 15.0]])),
                               torch.tensor([[size, size], [size / 2, size / 2]], dtype=torch.float32))
    assert geometry.logits_to_original(torch.zeros(1, 1, 16, 16)).shape == (1, 1, 30, 50)
    padded, _ = tiny_backbone.preprocess(image)
    assert (padded[:, -1] == 0).all() and not (tensor[:, -1] == 0).all()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference-forward")
    write_reference_dir(root / "SAM1", 128, (4, 5), 64)
    assert main(["import-reference", str(root / "SAM1"), str(root / "store"), "--base", "builtin:tiny-sam",
                 "--json"]) == 0
    return SAMCL.open(root / "store", device="cpu")


def test_selector_embedding_is_the_middle_block_of_the_stretched_image(imported):
    backbone, engine = imported.backbone, imported.engine
    assert imported.selector_block == backbone.num_blocks // 2  # 6 of ViT-B's 12 (checked in the import tests)
    image = np.random.default_rng(1).integers(0, 256, (40, 90, 3), dtype=np.uint8)
    prepared = engine.prepare([image])[0]
    size = backbone.image_size
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    pixels = (torch.from_numpy(resized).permute(2, 0, 1) - torch.tensor(PIXEL_MEAN).view(3, 1, 1)) \
        / torch.tensor(PIXEL_STD).view(3, 1, 1)
    with torch.no_grad():
        expected = backbone.model.vision_encoder.patch_embed(pixels[None]) + backbone.model.vision_encoder.pos_embed
        for block in range(imported.selector_block + 1):
            expected = backbone.model.vision_encoder.layers[block](expected)
    torch.testing.assert_close(backbone.pool(prepared.tokens[None]), expected.mean(dim=(1, 2)))
    assert prepared.geometry.resized == (size, size)


def test_engine_renders_their_heat_from_stretched_points(imported):
    engine = imported.engine
    image = np.zeros((40, 90, 3), dtype=np.uint8)
    geometry = engine.prepare([image])[0].geometry
    prompt = InputPrompt.of(Prompt.of([[45, 10], [80, 35]], [1, 0]), geometry, engine.device)
    size = imported.backbone.image_size
    points = torch.tensor([[[45 * size / 90, 10 * size / 40], [80 * size / 90, 35 * size / 40]]])
    expected = render_reference_heat(points, torch.tensor([[1, 1]]), imported.backbone.grid, 8.0)
    torch.testing.assert_close(engine.heat([prompt]), expected)
    result = imported.segment([image], [Prompt.of([[45, 10]], [1])])[0]
    assert result.masks.shape[1:] == (40, 90)


def test_sam2_import_runs_their_forward_with_hiera_windows(tmp_path, monkeypatch):
    from test_sam2 import tiny_sam2_config

    from samcl.backbone import Sam2Backbone
    from samcl.reference import import_reference

    backbone = Sam2Backbone.from_config(tiny_sam2_config(), seed=0)
    site = backbone.site
    write_reference_dir(tmp_path / "SAM2", site.dim, site.default_blocks, 0)
    report = import_reference(tmp_path / "SAM2", tmp_path / "store", backbone)
    assert report["adapted_blocks"] == [5, 6, 7] and report["selector"]["block"] == 4
    samcl = SAMCL.open(tmp_path / "store", base=backbone, device="cpu")
    seen = []
    original = Injection.block_delta

    def spy(self, block, x, window=0):
        seen.append((block, window))
        return original(self, block, x, window)

    image = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    monkeypatch.setattr(Injection, "block_delta", spy)
    result = samcl.segment([image], [Prompt.of([[30, 20]], [1])], force="Kvasir")[0]
    assert seen == [(5, 6), (6, 6), (7, 0)] and result.masks.shape[1:] == (50, 70)

"""Compiled graph shapes are bounded whatever clients send: OpenVINO compiles a static model per input shape
(batch size, point count), so a session keeps at most `MAX_STATIC_SHAPES` of them and runs every other shape on
one dynamic-shape model; the decoder's prompts are not padded to fixed sizes, because padding points move the
masks (measured here)."""

import numpy as np
import pytest
import torch

from samcl import runtime
from samcl.method.augmodule import config_for
from samcl.runtime.backbone import GraphBackbone
from samcl.runtime.export import cached_graphs
from samcl.runtime.graphs import export_decoder, extract_low_res_decoder
from samcl.runtime.sessions import MAX_STATIC_SHAPES, ShapeCache, open_session


def decoder_feeds(backbone, count: int, padding: int = 0, batch: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rows, cols = backbone.grid
    coords = rng.uniform(0, backbone.image_size, (batch, count, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (batch, count)).astype(np.float32)
    coords = np.concatenate([coords, np.zeros((batch, 1 + padding, 2), np.float32)], axis=1)
    labels = np.concatenate([labels, -np.ones((batch, 1 + padding), np.float32)], axis=1)
    return {"image_embeddings": rng.standard_normal((batch, backbone.neck_channels, rows, cols), np.float32),
            "point_coords": coords, "point_labels": labels,
            "mask_input": np.zeros((batch, 1, 4 * rows, 4 * cols), np.float32),
            "has_mask_input": np.zeros(1, np.float32)}


def test_padding_points_move_the_decoders_masks_so_prompts_are_not_padded(tiny_backbone, tmp_path):
    pytest.importorskip("onnxruntime")
    export_decoder(tiny_backbone, tmp_path / "decoder.onnx")
    extract_low_res_decoder(tmp_path)
    session = open_session("onnxruntime", tmp_path / "decoder_low.onnx", 1)
    _, low_res = session.run(decoder_feeds(tiny_backbone, 3))
    _, padded = session.run(decoder_feeds(tiny_backbone, 3, padding=3))  # 3 + 1 + 3 = 7 -> a bucket of 8
    assert np.abs(padded - low_res).max() > 1e-2 * np.abs(low_res).max()  # not the same masks: no padding


class FakeCompiles:
    def __init__(self):
        self.static, self.dynamic = [], 0

    def compile_static(self, feeds):
        self.static.append(tuple(a.shape for a in feeds.values()))
        return ("static", self.static[-1])

    def compile_dynamic(self):
        self.dynamic += 1
        return ("dynamic", None)


def test_shape_cache_compiles_a_bounded_number_of_models_whatever_shapes_arrive():
    fake = FakeCompiles()
    cache = ShapeCache(fake.compile_static, fake.compile_dynamic, max_static=4, promote_after=2)
    for count in range(1, 500):  # a client sending every point count once
        cache.get({"point_coords": np.zeros((1, count, 2))})
    assert len(cache.static) == 4 and fake.dynamic == 1 and cache.compiles == 5
    assert len(cache.misses) <= 16


def test_shape_cache_gives_a_repeated_shape_a_static_slot_and_drops_the_least_recent():
    fake = FakeCompiles()
    cache = ShapeCache(fake.compile_static, fake.compile_dynamic, max_static=2, promote_after=2)
    shape = lambda n: {"x": np.zeros((1, n))}
    assert cache.get(shape(1))[0] == cache.get(shape(2))[0] == "static"
    cache.get(shape(1))  # 1 is now the most recent
    kinds = [cache.get(shape(3))[0] for _ in range(3)]
    assert kinds == ["dynamic", "dynamic", "static"]  # promoted on its third run, in 2's slot
    assert [key[0][1] for key in cache.static] == [(1, 1), (1, 3)]


def test_no_static_slots_runs_every_shape_on_the_one_dynamic_model():
    fake = FakeCompiles()
    cache = ShapeCache(fake.compile_static, fake.compile_dynamic, max_static=0)
    assert {cache.get({"x": np.zeros((n,))})[0] for n in range(1, 50)} == {"dynamic"}
    assert fake.static == [] and fake.dynamic == 1


@pytest.mark.skipif(not runtime.installed("openvino"), reason="openvino is not installed")
def test_openvino_decoder_keeps_bounded_shapes_and_answers_as_onnxruntime(tiny_backbone, tmp_path):
    pytest.importorskip("onnxruntime")
    config = config_for(tiny_backbone.site, rank=4, adapted_blocks=(2, 3))
    folder = cached_graphs(tiny_backbone, config, 1, root=tmp_path)
    graphs = GraphBackbone(tiny_backbone, folder, "openvino", config, 1, threads=1)
    reference = GraphBackbone(tiny_backbone, folder, "onnxruntime", config, 1, threads=1)
    rows, cols = tiny_backbone.grid
    embeddings = torch.randn(1, tiny_backbone.neck_channels, rows, cols, generator=torch.Generator().manual_seed(0))
    for count in [*range(1, 25), 3, 3, 3, 3]:
        points = torch.rand(1, count, 2, generator=torch.Generator().manual_seed(count)) * tiny_backbone.image_size
        labels = torch.ones(1, count)
        low, _ = graphs.decode(embeddings, points, labels)
        want, _ = reference.decode(embeddings, points, labels)
        assert float((low - want).abs().max()) < 1e-3 * float(want.abs().max())
    cache = graphs.sessions["decoder_low"].shapes
    assert len(cache.static) <= MAX_STATIC_SHAPES and cache.compiles <= MAX_STATIC_SHAPES + 1
    assert graphs.compiled()["shapes"]["decoder_low"] <= MAX_STATIC_SHAPES + 1 and graphs.compiled()["bytes"] > 0


def test_a_large_graph_keeps_fewer_static_shapes(monkeypatch):
    from samcl.runtime import sessions

    fake = FakeCompiles()
    sizes = iter([300, 999, 999, 999])
    monkeypatch.setattr(sessions, "_measured", lambda compile_: (compile_(), next(sizes, 999)))
    cache = ShapeCache(fake.compile_static, fake.compile_dynamic, max_static=6, max_bytes=1000)
    kinds = [cache.get({"x": np.zeros((n,))})[0] for n in range(1, 6)]
    assert kinds == ["static"] * 3 + ["dynamic"] * 2 and cache.max_static == 3  # 1000 // 300

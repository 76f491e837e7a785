"""Small synthetic data for tests: coloured rectangles on two distinguishable backgrounds, non-square images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from samcl.data import Sample
from samcl.method import Injection
from samcl.method.augmodule import parameter_shapes


def toy_samples(n: int, background: tuple[int, int, int], seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        height, width = int(rng.integers(40, 70)), int(rng.integers(72, 110))
        image = np.clip(np.array(background) + rng.integers(-20, 20, (height, width, 3)), 0, 255).astype(np.uint8)
        mask = np.zeros((height, width), bool)
        y0, x0 = int(rng.integers(4, height - 24)), int(rng.integers(4, width - 34))
        mask[y0:y0 + 18, x0:x0 + 28] = True
        image[mask] = 255 - np.array(background)
        ys, xs = np.nonzero(mask)
        picks = rng.choice(len(xs), 3)
        points = np.stack([xs[picks], ys[picks]], 1).astype(np.float32)
        out.append(Sample(f"img{i:03d}", image, mask, points, np.ones(3, np.int64)))
    return out


def write_split(root: Path, samples: list[Sample], with_points: bool = True) -> Path:
    """Reference layout: PNG images, JPEG masks (values near 0/255), optional masks/points.json."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    points = {}
    for s in samples:
        Image.fromarray(s.image).save(root / "images" / f"{s.name}.png")
        Image.fromarray(s.mask.astype(np.uint8) * 255).save(root / "masks" / f"{s.name}.jpg", quality=90)
        points[f"{s.name}.jpg"] = s.points.tolist()
    if with_points:
        (root / "masks" / "points.json").write_text(json.dumps(points))
    return root


def write_domain(root: Path, background, seed: int, n_train: int = 8, n_test: int = 4) -> Path:
    write_split(root / "train", toy_samples(n_train, background, seed))
    write_split(root / "test", toy_samples(n_test, background, seed + 1000))
    return root


def assert_mixed_batch_matches_single(backbone, config, chosen) -> tuple:
    """Run random images through the adapted blocks with one module per sample (None: the base) in one pass, and
    check each result against that sample run alone (max abs diff <= 1e-5). Returns (tokens, mixed, block)."""
    pixels = torch.randn(len(chosen), 3, backbone.image_size, backbone.image_size)
    heat = torch.rand(len(chosen), *backbone.grid)
    block = backbone.default_selector_block
    with torch.no_grad():
        tokens = backbone.prefix(pixels, block)
        mixed = backbone.suffix(tokens, block + 1, Injection(config, stack_params(chosen, config), heat))
        for j, module in enumerate(chosen):
            injection = None if module is None else Injection(config, module.params(), heat[j:j + 1])
            single = backbone.suffix(tokens[j:j + 1], block + 1, injection)
            assert (mixed[j] - single[0]).abs().max() <= 1e-5
    return tokens, mixed, block


def assert_same_tensors(saved, reopened) -> None:
    """Two in-memory sets hold bit-identical modules, selector and buffer (a store's round trip)."""
    for name, module in saved.module_set.modules.items():
        for key, tensor in module.state_tensors().items():
            assert torch.equal(tensor.cpu(), reopened.module_set.modules[name].state_tensors()[key]), (name, key)
    for key, tensor in saved.module_set.selector.to_tensors().items():
        assert torch.equal(tensor.cpu(), reopened.module_set.selector.to_tensors()[key]), key
    assert torch.equal(saved.module_set.buffer.features, reopened.module_set.buffer.features)


def one_error_line(code: int, err, names=()) -> str:
    """What every bad input must give: exit code 2 and, on stderr (its text or its lines), exactly one
    'samcl: error: ...' line, no traceback, naming each of `names`; returns that line."""
    lines = err.strip().splitlines() if isinstance(err, str) else list(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("samcl: error: "), (code, lines)
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def cli_error(capsys, *argv, names=()) -> str:
    """Run `samcl argv` in this process: it must end with `one_error_line`; returns that line."""
    from samcl.cli import main

    code = main([str(a) for a in argv])
    return one_error_line(code, capsys.readouterr().err, names)


def stack_params(modules: list, config, device=None, dtype=None) -> dict[str, torch.Tensor]:
    """Per-sample parameters for a mixed batch, built apart from the bank: B modules (None = base, all zeros) ->
    grouped with G = B."""
    zeros = {n: torch.zeros(s) for n, s in parameter_shapes(config).items()}
    out = {}
    for name in zeros:
        parts = [m.named_tensors()[name] if m is not None else zeros[name] for m in modules]
        out[name] = torch.stack([p.to(device=device, dtype=dtype) for p in parts])
    return out


def transformers_propagation(model, pixels, prompts: dict, height: int, width: int, session_class,
                             streaming: bool = False) -> list[dict]:
    """transformers' own video propagation (Sam2VideoModel, Sam3TrackerVideoModel: `session_class` is its inference
    session), inputs added as its processor adds them (a box: two points labelled 2 and 3 before the clicks;
    model-input pixels) for `prompts` {frame 0: {object: Prompt}}: offline (the session holds the whole video) or
    streaming (each frame given to the model as it comes). Returns per frame {object: its low-res mask logits}."""
    session = session_class(video=None if streaming else pixels, video_height=height, video_width=width,
                            dtype=torch.float32)
    scale = torch.tensor([pixels.shape[-1] / width, pixels.shape[-2] / height])
    for obj, prompt in prompts[0].items():
        points = [] if prompt.box is None else [torch.from_numpy(prompt.box).view(2, 2)]
        labels = [] if prompt.box is None else [torch.tensor([2, 3])]
        points.append(torch.from_numpy(prompt.points))
        labels.append(torch.from_numpy(prompt.labels))
        session.add_point_inputs(session.obj_id_to_idx(obj), 0, {
            "point_coords": (torch.cat(points) * scale)[None, None],
            "point_labels": torch.cat(labels).to(torch.int32)[None, None]})
    session.obj_with_new_inputs = list(prompts[0])
    with torch.no_grad():
        outputs = (model(session, frame=frame) for frame in pixels) if streaming else \
            model.propagate_in_video_iterator(session, start_frame_idx=0)
        return [{obj: output.pred_masks[j] for j, obj in enumerate(output.object_ids)} for output in outputs]


def cli_runner(capsys):
    """`run(*argv)`: one `samcl` command in this process that must succeed (its stderr in the failure); its stdout."""
    from samcl.cli import main

    def run(*argv) -> str:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    return run


def cli_learn_red_and_blue(run, tmp_path: Path, base: Path) -> Path:
    """Two synthetic domains (red, blue: 4 training and 2 test images each) learned by `samcl learn` into a new store
    on `base` (a model folder); `run(*argv)` runs one command and returns its stdout. Returns the store."""
    write_domain(tmp_path / "red", (200, 30, 30), seed=0, n_train=4, n_test=2)
    write_domain(tmp_path / "blue", (30, 30, 200), seed=1, n_train=4, n_test=2)
    store = tmp_path / "store"
    run("learn", store, "--base", base, "--domain", "red", "--data", tmp_path / "red",
        "--epochs", "1", "--samples-per-domain", "4", "--selector-epochs", "2", "--json")
    run("learn", store, "--domain", "blue", "--data", tmp_path / "blue", "--epochs", "1", "--json")
    return store


def assert_together_equals_alone(samcl, videos, prompts, force, together: dict) -> None:
    """Each video's frames tracked together with others (`together[number]`, from `track_videos`) equal its own
    `track` (same frames in order, domains, objects, logits within 1e-5)."""
    for number, video in enumerate(videos):
        alone = list(samcl.track(iter(video), prompts[number], force=force[number], return_logits=True))
        assert [f.index for f in together[number]] == [f.index for f in alone] == list(range(len(video)))
        for ours, theirs in zip(together[number], alone):
            assert ours.domain == theirs.domain and sorted(ours.objects) == sorted(theirs.objects)
            for obj in theirs.objects:
                assert (ours.objects[obj].logits - theirs.objects[obj].logits).abs().max().item() <= 1e-5

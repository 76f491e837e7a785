"""The synthetic target and unseen domains (polyps, camouflage, shadows, skin lesions, cells, camouflage_sand):
each scene renderer draws an image and the mask its domain's convention asks for (see the package docstring)."""

from __future__ import annotations

import numpy as np

from .draw import (Scene, _blob, _bulge, _curve, _filter_mask, _gaussian_blur, _grain, _grid, _hsv, _microscopy, _mix,
                   _mucosa, _noise, _palette, _shift, _stroke_mask, _vignette)


def _polyps(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys, base, mucosa = _mucosa(rng, h, w)

    def bulge(center, radius, pale):
        return _bulge(rng, xs, ys, base, center, radius, pale)

    radius = rng.uniform(0.16, 0.28) * min(h, w)
    center = (rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h)
    target, color, rim, light = bulge(center, radius, rng.uniform(15, 40))
    image = np.where(rim[..., None], mucosa * 0.75, mucosa)
    image = np.where(target[..., None], color, image)
    for _ in range(int(rng.integers(0, 3))):  # smaller look-alike bulges: not the target
        r = radius * rng.uniform(0.35, 0.6)
        for _attempt in range(10):
            c = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h)
            if np.hypot(c[0] - center[0], c[1] - center[1]) > radius * 1.4 + r:
                break
        else:
            continue
        other, other_color, other_rim, _ = bulge(c, r, rng.uniform(5, 25))
        other &= ~target
        image = np.where((other_rim & ~target)[..., None], image * 0.8, image)
        image = np.where(other[..., None], other_color, image)
    image = _gaussian_blur(image, 0.7)
    glints = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(3, 8))):  # specular highlights on the lit side of the polyp
        gx = center[0] + light[0] * rng.uniform(0.1, 0.6) + rng.normal(0, radius * 0.2)
        gy = center[1] + light[1] * rng.uniform(0.1, 0.6) + rng.normal(0, radius * 0.2)
        glints |= _blob(rng, xs, ys, (gx, gy), rng.uniform(1.0, 3.5), 0.2, 2, aspect=rng.uniform(1, 2.5),
                        angle=rng.uniform(0, np.pi))
    glints &= _filter_mask(target, 3, grow=False)
    for _ in range(int(rng.integers(2, 7))):  # wet glints on the mucosa
        glints |= _blob(rng, xs, ys, (rng.uniform(0, w), rng.uniform(0, h)), rng.uniform(0.8, 2.5), 0.2, 2) & ~target
    image = np.where(glints[..., None], np.array([250.0, 248.0, 245.0]), image)
    image = image * _vignette(xs, ys, rng.uniform(0.6, 1.0))
    return image + _grain(rng, image.shape, 2.5), target


def _camouflage_palette(rng: np.random.Generator) -> np.ndarray:
    hue = rng.choice([rng.uniform(0.18, 0.36), rng.uniform(0.06, 0.12)])  # foliage greens or bark browns
    values = np.sort(rng.uniform(0.2, 0.85, 4))
    return np.stack([_hsv(hue + rng.normal(0, 0.03), rng.uniform(0.3, 0.7), v) for v in values])


def _camouflage(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys = _grid(h, w)
    colors = _camouflage_palette(rng)
    feature = rng.uniform(10, 22)
    image = _palette(_noise(rng, h, w, feature, octaves=3), colors)
    radius = rng.uniform(0.2, 0.32) * min(h, w)
    center = (rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h)
    target = _blob(rng, xs, ys, center, radius, rng.uniform(0.2, 0.4), 6, aspect=rng.uniform(1.0, 1.8),
                   angle=rng.uniform(0, np.pi))
    skin = _palette(_noise(rng, h, w, feature * rng.uniform(0.6, 0.9), octaves=3), colors)
    skin = skin * rng.uniform(0.9, 1.1, 3)  # a slight shift in colour
    body = _gaussian_blur(target.astype(np.float32), radius * 0.25)  # rounded body: darker towards its rim
    skin = skin * (0.8 + 0.3 * np.clip(body * 2 - 0.5, 0, 1))[..., None]
    alpha = _gaussian_blur(target.astype(np.float32), 0.8)
    image = _mix(image, skin, alpha)
    return image + _grain(rng, image.shape, 3.0), target


def _camouflage_sand(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys = _grid(h, w)
    hue = rng.uniform(0.08, 0.13)
    colors = np.stack([_hsv(hue, rng.uniform(0.3, 0.55), v) for v in np.sort(rng.uniform(0.45, 0.95, 3))])

    def ripples(angle, period, phase):
        warp = _noise(rng, h, w, 30, octaves=2) * period * 1.5
        proj = xs * np.cos(angle) + ys * np.sin(angle) + warp
        wave = 0.5 + 0.5 * np.sin(proj * 2 * np.pi / period + phase)
        return np.clip(0.7 * wave + 0.3 * rng.random((h, w), dtype=np.float32), 0, 1)

    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 11)
    image = _palette(ripples(angle, period, 0.0), colors)
    radius = rng.uniform(0.18, 0.26) * min(h, w)
    center = (rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h)
    target = _blob(rng, xs, ys, center, radius, rng.uniform(0.1, 0.25), 4, aspect=rng.uniform(1.8, 2.6),
                   angle=rng.uniform(0, np.pi))
    skin = _palette(ripples(angle + rng.uniform(-0.6, 0.6), period * rng.uniform(0.8, 1.2), rng.uniform(0, 6)), colors)
    alpha = _gaussian_blur(target.astype(np.float32), 1.0)
    image = _mix(image, skin * rng.uniform(0.93, 1.07), alpha)
    return image + _grain(rng, image.shape, 3.0), target


def _ground(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Busy, high-contrast ground (the texture must show through the shadow)."""
    h, w = xs.shape
    kind = rng.choice(["asphalt", "grass", "tiles", "cobbles"])
    fine = rng.random((h, w), dtype=np.float32)
    if kind == "asphalt":
        base = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.08), rng.uniform(0.6, 0.8))
        grain = _noise(rng, h, w, 2.5)
        return base * (0.6 + 0.5 * (0.4 * fine + 0.6 * grain) + 0.2 * _noise(rng, h, w, 20))[..., None]
    if kind == "grass":
        base = _hsv(rng.uniform(0.18, 0.3), rng.uniform(0.45, 0.75), rng.uniform(0.6, 0.85))
        blades = _noise(rng, h, w, 2.0)
        return base * (0.5 + 0.7 * (0.6 * blades + 0.4 * fine))[..., None]
    if kind == "tiles":
        base = _hsv(rng.uniform(0, 0.15), rng.uniform(0.1, 0.4), rng.uniform(0.7, 0.9))
        size = rng.uniform(10, 20)
        tile_id = np.floor(xs / size) * 7919 + np.floor(ys / size)
        shade = 0.75 + 0.4 * ((np.sin(tile_id * 12.9898 + rng.uniform(0, 100)) * 43758.5453) % 1.0)
        joints = (np.mod(xs, size) < 1.5) | (np.mod(ys, size) < 1.5)
        tiles = base * (shade * (0.92 + 0.16 * fine))[..., None]
        return np.where(joints[..., None], tiles * 0.55, tiles)
    base = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.1, 0.35), rng.uniform(0.65, 0.85))
    stones = _noise(rng, h, w, rng.uniform(5, 9))
    gaps = np.abs(stones - 0.5) < 0.06
    cobbles = base * (0.8 + 0.35 * _noise(rng, h, w, 4) + 0.1 * fine)[..., None]
    return np.where(gaps[..., None], cobbles * 0.5, cobbles)


def _shadows(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys = _grid(h, w)
    image = _ground(rng, xs, ys)
    size = rng.uniform(0.12, 0.2) * min(h, w)
    angle = rng.uniform(0, 2 * np.pi)  # direction the shadow falls
    length = rng.uniform(1.6, 3.0) * size
    direction = np.array([np.cos(angle), np.sin(angle)])
    # place the object so that object + shadow fit in the frame
    lo = np.array([size, size]) + np.maximum(-direction * length, 0)
    hi = np.array([w - size, h - size]) - np.maximum(direction * length, 0)
    base = rng.uniform(np.minimum(lo, hi), np.maximum(lo, hi))
    kind = rng.choice(["box", "post", "round"])
    if kind == "post":
        obj = _blob(rng, xs, ys, tuple(base), size * 0.45, 0.0, 0, aspect=2.2, angle=rng.uniform(0, np.pi))
    elif kind == "round":
        obj = _blob(rng, xs, ys, tuple(base), size * 0.6, 0.08, 3)
    else:
        obj = _blob(rng, xs, ys, tuple(base), size * 0.6, 0.0, 0, aspect=rng.uniform(1.0, 1.5), angle=rng.uniform(0, np.pi))
        obj = obj | _blob(rng, xs, ys, tuple(base), size * 0.6, 0.35, 1)
    # the shadow: the object swept along the light direction
    shadow = np.zeros((h, w), bool)
    for t in np.linspace(0.0, 1.0, 12):
        shift = direction * length * t
        shadow |= _shift(obj, int(round(shift[0])), int(round(shift[1])))
    # penumbra: sharp next to the object, softer further away
    along = np.clip(((xs - base[0]) * direction[0] + (ys - base[1]) * direction[1]) / (length + size), 0, 1)
    along = along.astype(np.float32)
    sharp = _gaussian_blur(shadow.astype(np.float32), rng.uniform(0.8, 1.5))
    soft = _gaussian_blur(shadow.astype(np.float32), rng.uniform(3.0, 5.0))
    alpha = sharp * (1 - along) + soft * along
    darkness = rng.uniform(0.3, 0.5)  # translucent: the ground texture shows through
    tint = np.array([0.9, 0.95, 1.12], np.float32)  # skylight makes shadows bluish
    image = image * (1 - alpha[..., None] * np.float32(darkness) * (2 - tint))
    target = (alpha > 0.5) & ~obj
    # half of the objects are dark themselves: then only the convention separates shadow from object
    value = rng.uniform(0.12, 0.35) if rng.random() < 0.5 else rng.uniform(0.85, 1.0)
    color = _hsv(rng.random(), rng.uniform(0.0, 0.8), value)
    lit = np.clip(color * (0.9 + 0.15 * _noise(rng, h, w, 10))[..., None], 0, 255)
    image = np.where(obj[..., None], lit, image)
    return image + _grain(rng, image.shape, 2.0), target


def _skin_lesions(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys = _grid(h, w)
    skin_color = _hsv(rng.uniform(0.04, 0.09), rng.uniform(0.2, 0.45), rng.uniform(0.65, 0.92))
    pores = rng.random((h, w), dtype=np.float32)
    image = skin_color * (0.9 + 0.12 * _noise(rng, h, w, 40) + 0.05 * pores)[..., None]
    radius = rng.uniform(0.22, 0.32) * min(h, w)
    center = (rng.uniform(0.4, 0.6) * w, rng.uniform(0.4, 0.6) * h)
    lesion = _blob(rng, xs, ys, center, radius, rng.uniform(0.15, 0.35), 6, aspect=rng.uniform(1.0, 1.4),
                   angle=rng.uniform(0, np.pi))
    offset = rng.normal(0, 0.12, 2) * radius
    core = _blob(rng, xs, ys, (center[0] + offset[0], center[1] + offset[1]), radius * rng.uniform(0.4, 0.6),
                 0.3, 6) & lesion
    brown = _hsv(rng.uniform(0.03, 0.08), rng.uniform(0.5, 0.75), rng.uniform(0.25, 0.45))
    halo = skin_color * 0.45 + brown * 0.55 * rng.uniform(0.9, 1.3)
    halo_alpha = _gaussian_blur(lesion.astype(np.float32), 1.2)
    image = _mix(image, halo * (0.95 + 0.1 * _noise(rng, h, w, 6))[..., None], halo_alpha)
    mottle = _noise(rng, h, w, 4)
    core_color = brown * (0.5 + 0.6 * mottle)[..., None] + np.array([0.0, 0.0, 12.0], np.float32)
    image = _mix(image, core_color, _gaussian_blur(core.astype(np.float32), 1.5) * 0.95)
    around = _filter_mask(lesion, 7, grow=True)
    for _ in range(int(rng.integers(0, 4))):  # freckles: not the lesion
        c = (rng.uniform(0, w), rng.uniform(0, h))
        freckle = _blob(rng, xs, ys, c, rng.uniform(2, 4.5), 0.2, 3) & ~around
        image = np.where(freckle[..., None], brown * 1.2, image)
    if rng.random() < 0.5:  # dermoscope: dark outside a circle
        r = np.hypot((xs - w / 2) / (w / 2), (ys - h / 2) / (h / 2))
        image = image * np.clip((rng.uniform(1.05, 1.3) - r) * 8, 0.05, 1.0)[..., None]
    hairs = [_curve(rng, h, w, bend=0.25) for _ in range(int(rng.integers(1, 9)))]
    hair = _stroke_mask(h, w, hairs, int(rng.integers(1, 3)))
    image = np.where(hair[..., None], brown * 0.35, image)
    return image + _grain(rng, image.shape, 2.5), lesion


def _cells(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys, image, cyto_color, nucleus_color = _microscopy(rng, h, w)
    nuclei = np.zeros((h, w), bool)
    cytoplasm = np.zeros((h, w), bool)
    centers: list[tuple[float, float]] = []
    radius = rng.uniform(9, 14)
    for _ in range(int(rng.integers(6, 17))):
        for _attempt in range(12):
            c = (rng.uniform(radius, w - radius), rng.uniform(radius, h - radius))
            if all(np.hypot(c[0] - o[0], c[1] - o[1]) > 1.5 * radius for o in centers):
                break
        else:
            continue
        centers.append(c)
        r = radius * rng.uniform(0.8, 1.2)
        x0, x1 = int(max(c[0] - 2 * r, 0)), int(min(c[0] + 2 * r + 1, w))
        y0, y1 = int(max(c[1] - 2 * r, 0)), int(min(c[1] + 2 * r + 1, h))
        local = (slice(y0, y1), slice(x0, x1))
        cell = _blob(rng, xs[local], ys[local], c, r, 0.25, 4, aspect=rng.uniform(1.0, 1.5), angle=rng.uniform(0, np.pi))
        shift = rng.normal(0, 0.15, 2) * r
        nucleus = _blob(rng, xs[local], ys[local], (c[0] + shift[0], c[1] + shift[1]), r * rng.uniform(0.4, 0.55),
                        0.15, 3, aspect=rng.uniform(1.0, 1.3), angle=rng.uniform(0, np.pi)) & cell
        cytoplasm[local] |= cell
        nuclei[local] |= nucleus
    texture = _noise(rng, h, w, 4)[..., None]
    image = _mix(image, cyto_color * (0.7 + 0.6 * texture), _gaussian_blur(cytoplasm.astype(np.float32), 1.0))
    image = _mix(image, nucleus_color * (0.8 + 0.3 * texture), _gaussian_blur(nuclei.astype(np.float32), 0.8))
    image = image + _grain(rng, image.shape, 4.0) * (0.5 + image / 255.0)  # shot noise, brighter where brighter
    return image, nuclei

"""`sa1b-pack show` and render.py: a valid PNG of the expected size, colour only where masks,
boxes and points are, the largest masks chosen, masks decoded at the rendered size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sa1b_pack import open_store, pack
from sa1b_pack.cli import main
from sa1b_pack.render import caption_height, render_sample, render_size
from sa1b_pack.testing.synth import synth_shards


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("render")
    synth_shards(tmp / "src", [0], 3, small=True, progress=False)
    pack(tmp / "src", tmp / "dst", [0], progress=False)
    return tmp / "dst"


def _picture(png: Path) -> tuple[np.ndarray, np.ndarray]:
    """(caption strip, picture below it) of a rendered PNG."""
    pixels = np.asarray(Image.open(png).convert("RGB"))
    strip = caption_height(pixels.shape[1])
    return pixels[:strip], pixels[strip:]


def _touched(sample, chosen: list[int], margin: int = 4) -> np.ndarray:
    """Pixels a render of masks ``chosen`` at full size may change: their boxes and points,
    widened by ``margin`` (boxes may be one pixel smaller than their masks, as released)."""
    near = np.zeros((sample.height, sample.width), dtype=bool)
    points = np.asarray(sample.point_coords).reshape(len(sample), -1, 2)[:, 0]
    for j in chosen:
        x, y, w, h = sample.bbox[j]
        _mark(near, y - margin, y + h + margin, x - margin, x + w + margin)
        px, py = points[j]
        _mark(near, py - 2 * margin, py + 2 * margin, px - 2 * margin, px + 2 * margin)
    return near


def _mark(near: np.ndarray, y0: float, y1: float, x0: float, x1: float) -> None:
    near[max(0, int(y0)) : max(0, int(y1) + 1), max(0, int(x0)) : max(0, int(x1) + 1)] = True


def _interior(mask: np.ndarray, r: int = 2) -> np.ndarray:
    """Mask pixels at least ``r`` + 1 px from its edge (square erosion)."""
    padded = np.pad(mask, r)
    inner = padded.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            inner &= np.roll(padded, (dy, dx), axis=(0, 1))
    return inner[r:-r, r:-r]


def _with_masks(store) -> int:
    return next(i for i, s in enumerate(store) if len(s) >= 3)


def test_show_writes_png_of_rendered_size(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "sample.png"
    assert main(["show", str(store_dir), "1", "--out", str(png)]) == 0
    assert capsys.readouterr().out.strip() == str(png)
    sample = open_store(store_dir)[1]
    with Image.open(png) as im:
        assert im.format == "PNG"
        h, w = render_size(sample.height, sample.width)
        assert (h, w) == (sample.height, sample.width)  # small images are not shrunk
        assert im.size == (w, h + caption_height(w))


def test_mask_colour_inside_masks_only(store_dir: Path, tmp_path: Path) -> None:
    store = open_store(store_dir)
    index = _with_masks(store)
    sample = store[index]
    png = tmp_path / "all.png"
    assert main(["show", str(store_dir), str(index), "--out", str(png)]) == 0
    strip, shown = _picture(png)
    image = sample.image()
    assert shown.shape == image.shape
    assert (strip != strip[0, -1]).any()  # some caption text was drawn
    changed = (shown != image).any(axis=2)

    masks = sample.masks().view(bool)
    order = np.argsort(sample.area, kind="stable")  # smaller masks are drawn over larger ones
    # The smallest mask with an interior of its own: pixels tinted by its fill, not outlines.
    interiors = (_interior(masks[j]) & ~masks[order[:k]].any(axis=0) for k, j in enumerate(order))
    inside = next(m for m in interiors if m.sum() >= 20)
    assert changed[inside].mean() > 0.9
    outside = ~_touched(sample, list(range(len(sample)))) & ~masks.any(axis=0)
    assert outside.sum() > 100
    assert not changed[outside].any()


def test_max_masks_one_shows_the_largest(store_dir: Path, tmp_path: Path) -> None:
    store = open_store(store_dir)
    index = _with_masks(store)
    sample = store[index]
    png = tmp_path / "one.png"
    assert main(["show", str(store_dir), str(index), "--out", str(png), "--max-masks", "1"]) == 0
    _, shown = _picture(png)
    changed = (shown != sample.image()).any(axis=2)
    largest = int(np.argmax(sample.area))
    assert changed[sample.masks([largest])[0].view(bool)].mean() > 0.9
    assert not changed[~_touched(sample, [largest])].any()
    others = sample.masks().view(bool).any(axis=0) & ~_touched(sample, [largest])
    assert others.any()  # other masks exist where nothing was drawn


def test_zero_masks_renders_plain_image(store_dir: Path) -> None:
    store = open_store(store_dir)
    sample = next(s for s in store if len(s) == 0)
    picture = np.asarray(render_sample(sample))
    strip = caption_height(sample.width)
    np.testing.assert_array_equal(picture[strip:], sample.image())


def test_out_of_range_index_is_a_one_line_error(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "none.png"
    assert main(["show", str(store_dir), "3", "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sa1b-pack: error:") and "out of range" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not png.exists()


class _Spy:
    """A sample that records how its masks were asked for."""

    def __init__(self, sample) -> None:
        self._sample, self.calls = sample, []

    def __getattr__(self, name: str):
        return getattr(self._sample, name)

    def __len__(self) -> int:
        return len(self._sample)

    def masks(self, indices=None, **kw):
        self.calls.append((list(indices), kw))
        return self._sample.masks(indices, **kw)


def test_shrinks_and_decodes_masks_at_rendered_size(store_dir: Path) -> None:
    store = open_store(store_dir)
    sample = _Spy(store[_with_masks(store)])
    h, w = render_size(sample.height, sample.width, longest=64)
    assert max(h, w) == 64
    picture = render_sample(sample, longest=64, max_masks=2)
    assert picture.size == (w, h + caption_height(w))
    largest_two = np.argsort(-sample.area, kind="stable")[:2].tolist()
    assert sample.calls == [(largest_two, {"size": (h, w)})]
    assert render_size(100, 200, scale=0.5) == (50, 100)
    assert render_size(100, 200, longest=None) == (100, 200)
    with pytest.raises(ValueError, match="scale"):
        render_size(100, 200, scale=0)

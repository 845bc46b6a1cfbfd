"""The device stage of SA1BLoader run with device="cpu": the CPU loader's batches (masks and
every field exact, images within the documented resize tolerance, exact where no resize is
involved), per-image CPU fallback routed by JPEG markers and counted, clear errors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import simplejpeg
from PIL import Image

from sa1b_pack.codec.jpeg_markers import cpu_only_reason
from sa1b_pack.write.packer import pack

torch = pytest.importorskip("torch", reason="the device stage is torch code")
from sa1b_pack.torch import SA1BDataset, SA1BLoader, SA1BSampler  # noqa: E402
from sa1b_pack.train import device as device_module  # noqa: E402

RECIPE = dict(image_size=48, mask_size=12, max_masks=4, mask_sampling="random")
# Mean absolute difference (levels of 255) of one image's unpadded pixels, device resize
# against the CPU recipe, same decoded pixels; see train/device_images.py and docs/gpu.md.
IMAGE_MAD = 1.5


def pillow_jpeg(pixels: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    image = Image.fromarray(pixels)
    if options.pop("cmyk", False):
        image = image.convert("CMYK")
    image.save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def batches(ds, device=None, seed: int = 1, batch_size: int = 4, **options) -> tuple[list, Any]:
    loader = SA1BLoader(ds, batch_size, threads=2, sampler=SA1BSampler(ds, 1, 0, seed=seed),
                        copy=device is None, device=device, **options)  # fmt: skip
    return list(loader), loader


def image_mad(got: torch.Tensor, want: torch.Tensor, sizes: torch.Tensor) -> list[float]:
    """Per image: the unpadded region's mean absolute difference; padding must be 0."""
    out = []
    for g, w, (h, wd) in zip(got, want, sizes.tolist(), strict=True):
        assert not g[:, h:].any() and not g[:, :, wd:].any()
        out.append(float((g[:, :h, :wd].int() - w[:, :h, :wd].int()).abs().float().mean()))
    return out


def assert_batches_match(got: list, want: list, exact_images: bool = False) -> list[float]:
    assert len(got) == len(want)
    mads = []
    for a, b in zip(got, want, strict=True):
        assert set(a) == set(b)
        for key in b:
            assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
            if key == "image" and not exact_images:
                mads += image_mad(a[key], b[key], b["input_size"])
                continue
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True, msg=key)
    assert max(mads, default=0) <= IMAGE_MAD, mads
    return mads


@pytest.mark.parametrize("recipe", [RECIPE, dict(image_size=64, mask_size=32, max_masks=64,
                                                 mask_sampling="all", relations=True)])  # fmt: skip
def test_same_batches_as_the_cpu_loader(packed_dir: Path, recipe: dict) -> None:
    ds = SA1BDataset(packed_dir, **recipe)
    want, _ = batches(ds)
    got, loader = batches(ds, "cpu")
    assert_batches_match(got, want)
    stats = loader.device_stats
    assert stats["cpu_decoded"] == len(ds) and stats["batches"] == len(want)


def test_float_images_and_epochs(packed_dir: Path) -> None:
    ds = SA1BDataset(packed_dir, **RECIPE, float_image=True)
    ds.set_epoch(3)
    want = [b["image"] for b in batches(ds, seed=2)[0]]
    got = [b["image"] for b in batches(ds, "cpu", seed=2)[0]]
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32 and (a - b).abs().mean() <= IMAGE_MAD / 255


def test_pre_resized_store_gives_identical_images(source_dir: Path, tmp_path: Path) -> None:
    """No resize on either side (the store holds SAM's shape): the same decoder gives the
    same pixels, so the batches are equal outright."""
    report = pack(source_dir, tmp_path / "store", [0, 1], image_longest=48, progress=False)
    assert report.ok
    ds = SA1BDataset(tmp_path / "store", **RECIPE)
    assert_batches_match(batches(ds, "cpu")[0], batches(ds)[0], exact_images=True)


def test_jpeg_markers_route_what_a_gpu_decoder_cannot_take() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert cpu_only_reason(simplejpeg.encode_jpeg(pixels, quality=90)) is None
    assert cpu_only_reason(pillow_jpeg(pixels)) is None
    assert cpu_only_reason(memoryview(pillow_jpeg(pixels, optimize=True))) is None
    assert cpu_only_reason(pillow_jpeg(pixels[:, :, 0])) is None  # grayscale: 1 component
    assert cpu_only_reason(pillow_jpeg(pixels, progressive=True)) == "progressive"
    assert cpu_only_reason(pillow_jpeg(pixels, cmyk=True)) == "cmyk"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: EXIF segments before the frame header are skipped
    assert cpu_only_reason(pillow_jpeg(pixels, exif=exif.tobytes())) is None
    for bad in (b"", b"\xff\xd8", b"not a jpeg", b"\xff\xd8\xff\xda\x00\x02"):
        assert cpu_only_reason(bad) == "no frame header"


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory: pytest.TempPathFactory, tools) -> tuple[Path, dict]:
    """A store whose JPEGs are baseline, progressive and CMYK (Pillow re-encodes of the same
    pixels), and the image ids of the non-baseline ones."""
    src = tmp_path_factory.mktemp("mixed")
    members, special = [], {}
    for k in range(9):
        image_id = 100 + k
        jpeg, doc = tools.sample_pair(image_id, seed=k)
        pixels = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
        if k % 3 == 1:
            jpeg, special[image_id] = pillow_jpeg(pixels, progressive=True), "progressive"
        elif k % 3 == 2:
            jpeg, special[image_id] = pillow_jpeg(pixels, cmyk=True), "cmyk"
        members += [(f"sa_{image_id}.jpg", jpeg), (f"sa_{image_id}.json", orjson.dumps(doc))]
    tools.write_tar(src / "sa_000000.tar", members)
    report = pack(src, src / "store", [0], progress=False)
    assert report.ok, report
    return src / "store", special


def test_progressive_and_cmyk_fall_back_to_the_cpu_recipe_counted(mixed_store) -> None:
    store, special = mixed_store
    ds = SA1BDataset(store, **RECIPE)
    want, _ = batches(ds, batch_size=3)
    got, loader = batches(ds, "cpu", batch_size=3)
    assert_batches_match(got, want)
    stats = loader.device_stats
    fallback_ids = {i for b in want for i in b["image_id"].tolist() if i in special}
    assert stats["cpu_fallback"] == len(fallback_ids) > 0
    assert stats["cpu_fallback"] + stats["cpu_decoded"] == stats["images"] == len(ds)
    assert dict(stats["fallback_reasons"]) == {
        r: sum(special[i] == r for i in fallback_ids) for r in set(special.values())
    }
    for a, b in zip(got, want, strict=True):  # fallback images are the CPU recipe's own
        for slot, image_id in enumerate(b["image_id"].tolist()):
            if image_id in special:
                assert torch.equal(a["image"][slot], b["image"][slot])


class HalfFailingDecoder:
    """Stands in for the GPU decoder: decodes on the CPU, gives up on every other image."""

    def __init__(self) -> None:
        self.calls = 0

    def decode(self, jpegs, stream) -> list:
        self.calls += 1
        return [None if i % 2 else torch.from_numpy(simplejpeg.decode_jpeg(j, colorspace="RGB"))
                for i, j in enumerate(jpegs)]  # fmt: skip


def test_device_decoder_routing_and_its_failures(mixed_store) -> None:
    """The GPU path's routing, on the CPU: baseline JPEGs go to the batched decoder in one
    call per batch, markers send the others to the CPU recipe, failures are decoded there."""
    store, special = mixed_store
    ds = SA1BDataset(store, **RECIPE)
    want, _ = batches(ds, batch_size=3)
    loader = SA1BLoader(ds, 3, threads=2, sampler=SA1BSampler(ds, 1, 0, seed=1), device="cpu")
    stage = loader._device
    stage.decoder, stage.host_decode = HalfFailingDecoder(), False
    assert_batches_match(list(loader), want)
    stats = loader.device_stats
    baseline = [b for b in want if set(b["image_id"].tolist()) - set(special)]
    assert stage.decoder.calls == len(baseline) > 0  # one call per batch that has any
    assert stats["cpu_decoded"] == 0 and stats["gpu_decoded"] > 0
    assert stats["fallback_reasons"]["decoder failed"] > 0
    assert stats["gpu_decoded"] + stats["cpu_fallback"] == stats["images"] == len(ds)


def test_cuda_without_a_gpu_is_a_clear_error(packed_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ds = SA1BDataset(packed_dir, **RECIPE)
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        SA1BLoader(ds, 4, device="cuda")
    with pytest.raises(ValueError, match="device='cuda' or 'cpu'"):
        device_module.resolve_device("meta")


def test_numpy_transforms_are_refused(packed_dir: Path) -> None:
    from sa1b_pack.train.transforms import HorizontalFlip

    ds = SA1BDataset(packed_dir, **RECIPE, transform=HorizontalFlip())
    with pytest.raises(ValueError, match="no per-sample numpy transforms"):
        SA1BLoader(ds, 4, device="cpu")


def test_attached_arrays_travel_in_the_same_transfer(packed_dir: Path, tmp_path: Path) -> None:
    import shutil

    from sa1b_pack.write.attach import attach

    store = tmp_path / "store"
    shutil.copytree(packed_dir, store)

    def teacher(sample):
        if sample.image_id % 3 == 0:
            return None
        return np.random.default_rng(sample.image_id).normal(size=(4, 8, 8)).astype(np.float16)

    attach(store, "teacher", teacher, allow_missing=True, progress=False)
    ds = SA1BDataset(store, attached=["teacher"], **RECIPE)
    got, want = batches(ds, "cpu")[0], batches(ds)[0]
    assert_batches_match(got, want)
    assert got[0]["teacher"].dtype == torch.float16
    presence = [p for b in got for p in b["teacher_present"].tolist()]
    assert True in presence and False in presence

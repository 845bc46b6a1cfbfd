"""Format version, file names, payloads and their spans: the files half of the contract.

A store is a folder (or an object-storage prefix, see sa1b_pack/storage)::

    manifest.json                     # FORMAT_VERSION, committed shards, counts, sizes, sha256
    manifests/<g>.delta.json          # commits since manifest.json, while a packer runs
    parts/sa_000000/images.parquet    # one row per image (analysis: any Parquet tool)
    parts/sa_000000/annotations.parquet   # one row per mask, every source field
    parts/sa_000000/images.arrow      # the same tables as uncompressed Arrow IPC, memory-mapped
    parts/sa_000000/annotations.arrow #   by the reader: O(1) row access, shared page cache
    parts/sa_000000/jpeg.bin          # JPEG members' bytes as-is, addressed by images.jpeg_*
    parts/sa_000000/counts.bin        # masks' COCO counts strings as-is, by annotations.counts_*
    parts/sa_000000/resized.bin       # pre-resized JPEGs if packed with --image-longest
    parts/sa_000000/attached/<name>-<id>.bin  # arrays attached after packing (write/attach.py): one
                                      #   fixed-size row per image, in the part's image order

The columns of both tables are listed in ``columns.py`` beside this module. A shard exists for
readers only once it is listed in the manifest, which is replaced atomically after its part
is complete; an attached array exists for a part once its manifest entry lists it. This
module imports nothing heavy: the manifest-only commands load it.
"""

from __future__ import annotations

FORMAT_VERSION = 2  # 2: masks kept as COCO strings (counts.bin), not uint32 runs
FORMAT_NAME = "sa1b_pack"
# A full manifest that commit deltas may follow says 3, so a reader that predates deltas
# refuses it instead of missing shards; at rest (no delta) it says FORMAT_VERSION again.
JOURNALED_VERSION = 3

MANIFEST = "manifest.json"
MANIFESTS_DIR = "manifests"  # deltas, and on object storage every manifest generation
DELTA_SUFFIX = ".delta.json"  # manifests/<number:010d>.delta.json: one commit (journal.py)
PARTS_DIR = "parts"
LOCK_FILE = ".pack.lock"

IMAGES_PARQUET = "images.parquet"
ANNOTATIONS_PARQUET = "annotations.parquet"
IMAGES_ARROW = "images.arrow"
ANNOTATIONS_ARROW = "annotations.arrow"
JPEG_PAYLOAD = "jpeg.bin"
COUNTS_PAYLOAD = "counts.bin"
RESIZED_PAYLOAD = "resized.bin"

# table -> (Parquet for analysis, Arrow IPC memory-mapped by the reader)
TABLE_FILES = {
    "images": (IMAGES_PARQUET, IMAGES_ARROW),
    "annotations": (ANNOTATIONS_PARQUET, ANNOTATIONS_ARROW),
}
# payload file -> the manifest entry's byte count of it
PAYLOADS = {
    JPEG_PAYLOAD: "jpeg_bytes",
    COUNTS_PAYLOAD: "counts_bytes",
    RESIZED_PAYLOAD: "resized_bytes",
}
PART_FILES = (*(f for pair in TABLE_FILES.values() for f in pair), *PAYLOADS)
# (payload file, table, offset column, size column): every span lies inside its payload.
PAYLOAD_SPANS = (
    (JPEG_PAYLOAD, "images", "jpeg_offset", "jpeg_size"),
    (RESIZED_PAYLOAD, "images", "resized_offset", "resized_size"),
    (COUNTS_PAYLOAD, "annotations", "counts_offset", "counts_size"),
)

# Attached arrays: the manifest's top level says what each name holds
# ({"dtype": "<f2", "shape": [256, 64, 64]}); a part's entry lists its file under
# "attached" (with the image ids that had no array, zero-filled) and under "files" (sha256).
ATTACHED_DIR = "attached"
ATTACHED_NAME = r"[A-Za-z][A-Za-z0-9_]{0,63}"  # a Python identifier: a dict key, a file name


def part_files(entry: dict) -> tuple[str, ...]:
    """Every file of a committed part: the packed ones, then its attached arrays'."""
    return (*PART_FILES, *(a["file"] for a in entry.get("attached", {}).values()))


RESIZED_QUALITY = 90  # JPEG quality of the pre-resized copies (pack --image-longest)

"""not_a_tar: what an error page or other file saved under a shard's name is, in plain words."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile

import pytest

from sa1b_pack.source.sniff import REFETCH, SNIFF_BYTES, not_a_tar

S3_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message><RequestId>4F2A</RequestId></Error>"
)
CDN_PAGE = (
    b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
    b"<title>Error 403 &mdash; URL signature expired</title></head><body>" + b"x" * 9000
)


def test_empty_file() -> None:
    assert not_a_tar(b"") == (
        "an empty file (0 bytes), not a tar: the download failed; download it again"
    )


def test_html_page_with_its_title() -> None:
    said = not_a_tar(CDN_PAGE[:SNIFF_BYTES])
    assert (
        said == f"not a tar but an HTML page titled 'Error 403 — URL signature expired': {REFETCH}"
    )
    assert not_a_tar(b"  <HTML><body>Forbidden</body></HTML>") == (
        f"not a tar but an HTML page: {REFETCH}"
    )
    assert "titled 'Oops'" in not_a_tar(
        b"\xef\xbb\xbf<?xml version='1.0'?><html><title>Oops</title>"
    )


def test_xml_error_with_code_and_message() -> None:
    assert not_a_tar(S3_ERROR) == (
        f"not a tar but an XML document <Error>: AccessDenied, 'Request has expired': {REFETCH}"
    )
    assert not_a_tar(b"<ListBucketResult><Name>b</Name>") == (
        f"not a tar but an XML document <ListBucketResult>: {REFETCH}"
    )


def test_json() -> None:
    said = not_a_tar(b'{"error": {"code": 403, "message": "Signature expired"}}')
    assert said == f"not a tar but JSON: '403, Signature expired': {REFETCH}"
    assert not_a_tar(b'{"error": "expired"}') == f"not a tar but JSON: 'expired': {REFETCH}"
    cut = b'{"items": [' + b"1, " * 3000
    assert not_a_tar(cut[:SNIFF_BYTES]).startswith('not a tar but JSON starting \'{"items": [1, 1,')


def test_plain_text_first_line_shortened() -> None:
    said = not_a_tar(b"Access denied: the link has expired.\nRequest id 12\n")
    assert (
        said
        == f"not a tar but a text file starting 'Access denied: the link has expired.': {REFETCH}"
    )
    long = not_a_tar(("é" * 200).encode()[:301])  # cut inside a 2-byte character
    assert long is not None and "'" + "é" * 77 + "...'" in long


def archive(kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr("sa_1.jpg", b"\xff\xd8\xff")
        return buffer.getvalue()
    return gzip.compress(b"not a tar inside" * 100)


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (archive("gzip"), "not a tar but a gzip file that does not hold a readable tar (cut "
         "short, or no tar inside): download it again"),
        (archive("zip"), "not a tar but a zip archive: SA-1B shards are plain tar: download "
         "the shard itself"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "not a tar but a JPEG image: download the shard "
         "itself, not one of its images"),
        (b"%PDF-1.7\n", "not a tar but a PDF document: download the shard itself"),
    ],
)  # fmt: skip
def test_archives_and_others_by_magic_bytes(head: bytes, said: str) -> None:
    assert not_a_tar(head) == said


def test_a_damaged_tar_or_unknown_bytes_is_not_named() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("sa_1.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    head = bytearray(buffer.getvalue()[:SNIFF_BYTES])
    head[148:156] = b"garbage!"  # a bad header checksum: still a tar, damaged
    assert not_a_tar(bytes(head)) is None
    assert not_a_tar(bytes(range(256)) * 4) is None

"""The expiry of Meta's signed links, read from their ``oe=`` parameter."""

from __future__ import annotations

import datetime as dt

import pytest

from sa1b_pack.fetch.links import ExpiredLinksError, check_expiry, link_expiry

UTC = dt.UTC
NOW = dt.datetime(2025, 3, 1, tzinfo=UTC)
CDN = "https://scontent.xx.fbcdn.net/m1/v/t6/sa_000000.tar?ccb=10-5&oh=00_Ab&oe="


def test_link_expiry_is_hex_unix_seconds() -> None:
    assert link_expiry(CDN + "6790A1B2") == dt.datetime(2025, 1, 22, 7, 43, 46, tzinfo=UTC)
    assert link_expiry(CDN + "6790a1b2&_nc_sid=0") == link_expiry(CDN + "6790A1B2")
    assert link_expiry("https://cdn.example/sa_000000.tar") is None
    assert link_expiry("https://cdn.example/sa_000000.tar?oe=") is None
    assert link_expiry(CDN + "not-hex") is None  # the server decides
    assert link_expiry(CDN + "F" * 40) is None  # no representable date


def test_check_expiry_messages() -> None:
    old, older, fresh = CDN + "67C0B000", CDN + "6790A1B2", CDN + "7FFFFFFF"
    check_expiry({0: fresh, 1: "https://cdn.example/a.tar"}, "links.txt", NOW)
    check_expiry({}, "links.txt", NOW)
    with pytest.raises(ExpiredLinksError) as every:
        check_expiry({0: older, 1: older}, "links.txt", NOW)
    assert str(every.value) == (
        "the links in links.txt expired on 2025-01-22 07:43 UTC: the CDN refuses expired "
        "links, so nothing was downloaded. Download a fresh links file from Meta's SA-1B page "
        "(https://ai.meta.com/datasets/segment-anything-downloads/) and run again with it."
    )
    with pytest.raises(ExpiredLinksError, match=r"links\.txt expired, the first on 2025-01-22"):
        check_expiry({0: old, 1: older}, "links.txt", NOW)
    with pytest.raises(ExpiredLinksError, match=r"^2 of the 3 links needed from links.txt have "
                       r"expired, the earliest on 2025-01-22 07:43 UTC: "):  # fmt: skip
        check_expiry({0: old, 1: fresh, 2: older}, "links.txt", NOW)

"""Deterministic identifiers for the simulated catalog, and the ID shapes the API accepts.

Everything here is a pure function of its input (hash-based), so the same Spotify ID gets the
same ReccoBeats UUID, ISRC and "unknown"/"no features" fate in every process and every run:
tests can compute the expected answer instead of recording it.
"""

from __future__ import annotations

import hashlib
import re
import uuid

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

_SPOTIFY_RE = re.compile(r"^[0-9A-Za-z]{22}$")
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
# ISRC: country (2 letters), registrant (3 alphanumerics), year (2 digits), designation (5
# digits). Only upper case matches: the real API ignores lower-case ISRCs (api notes §7.8).
_ISRC_RE = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$")

_ISRC_COUNTRIES = ("US", "GB", "DE", "FR", "SE", "BR", "CA", "AU", "NL", "JP", "KR", "ES", "IT")
_ALNUM_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _digest(*parts: str) -> bytes:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=32).digest()


def hash_fraction(salt: str, key: str) -> float:
    """A stable number in [0, 1) for ``key``: decides deterministic fates (unknown, no features)."""
    return int.from_bytes(_digest(salt, key)[:8], "big") / 2**64


def uuid4_shaped(kind: str, key: str) -> str:
    """A UUID that looks like the API's v4 IDs but is derived from ``key`` (stable across runs)."""
    return str(uuid.UUID(bytes=_digest("uuid", kind, key)[:16], version=4))


def base62_id(kind: str, key: str, length: int = 22) -> str:
    """A Spotify-shaped base62 ID derived from ``key`` (for the fake artist IDs)."""
    n = int.from_bytes(_digest("b62", kind, key), "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, 62)
        out.append(BASE62[r])
    return "".join(out)


def isrc_for(spotify_id: str, decade: str) -> str:
    """An upper-case ISRC whose year digits agree with the track's decade ("90s" -> 9x)."""
    d = _digest("isrc", spotify_id)
    country = _ISRC_COUNTRIES[d[0] % len(_ISRC_COUNTRIES)]
    registrant = "".join(_ALNUM_UPPER[b % len(_ALNUM_UPPER)] for b in d[1:4])
    decade_digit = decade[:1] if decade[:1].isdigit() else str(d[4] % 10)
    year = f"{decade_digit}{d[5] % 10}"
    designation = f"{int.from_bytes(d[6:10], 'big') % 100000:05d}"
    return f"{country}{registrant}{year}{designation}"


def is_spotify_id(value: str) -> bool:
    return bool(_SPOTIFY_RE.match(value))


def is_uuid(value: str) -> bool:
    return bool(_UUID_RE.match(value))


def is_isrc(value: str) -> bool:
    return bool(_ISRC_RE.match(value))


def id_kind(value: str) -> str | None:
    """``"spotify"``, ``"uuid"``, ``"isrc"`` or None (malformed: the API just finds nothing)."""
    if is_spotify_id(value):
        return "spotify"
    if is_uuid(value):
        return "uuid"
    if is_isrc(value):
        return "isrc"
    return None

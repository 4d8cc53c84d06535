"""The simulator's catalog records: a track, its artist and its audio features, as plain values.

Shared by ``catalog`` (the index), ``catalog_loader`` (the rows it is built from) and
``recommender`` (the nearest-neighbour search), so none of them has to import another's
internals.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.api.fields import FEATURE_COLUMNS as FEATURE_NAMES


@dataclass(frozen=True, slots=True)
class Features:
    """Audio features of one track (field names as the API spells them)."""

    acousticness: float
    danceability: float
    energy: float
    instrumentalness: float
    key: int
    liveness: float
    loudness: float
    mode: int
    speechiness: float
    tempo: float
    valence: float

    def as_dict(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in FEATURE_NAMES}

    def vector(self) -> tuple[float, ...]:
        return tuple(float(getattr(self, name)) for name in FEATURE_NAMES)


@dataclass(frozen=True, slots=True)
class CatalogArtist:
    reccobeats_id: str
    spotify_id: str
    name: str

    @property
    def href(self) -> str:
        return f"https://open.spotify.com/artist/{self.spotify_id}"


@dataclass(frozen=True, slots=True)
class CatalogTrack:
    spotify_id: str
    reccobeats_id: str
    title: str
    artist: CatalogArtist
    duration_ms: int
    popularity: int
    isrc: str
    available_countries: str
    decade: str
    features: Features | None

    @property
    def href(self) -> str:
        return f"https://open.spotify.com/track/{self.spotify_id}"


def id_sort_key(spotify_id: str) -> tuple[str, str]:
    """Case-insensitive Spotify-ID order, as in the recorded artist-track page (exact ties last)."""
    return (spotify_id.casefold(), spotify_id)


@dataclass(frozen=True, slots=True)
class CatalogRow:
    """One input row of the catalog, before the fates (unknown, no features) are applied."""

    spotify_id: str
    title: str
    artist: str
    popularity: int
    duration_ms: int
    decade: str
    features: Features

"""The simulator's catalog: which tracks the fake ReccoBeats knows, and what it says about them.

Built from the bundled ``data/catalog.csv.gz`` (a copy of the sample track list) so the demo
input and the simulated API agree, minus a deterministic ~4 % that the API "does not know" and
with ~5 % that have metadata but no audio features, because the real API has both gaps.
Tests use the same object to compute expected answers, so nothing here is random at run time:
every fate and every derived ID is a hash of the Spotify ID (see ``ids.py``).

The records live in ``entities``, the rows in ``catalog_loader``, the nearest-neighbour search in
``recommender``; this module is the index over them. ``FEATURE_NAMES``, ``Features``,
``CatalogArtist``, ``CatalogTrack``, ``id_sort_key`` and ``TARGET_RANGES`` are re-exported here,
where the rest of the simulator has always found them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import threading
from collections.abc import Iterable, Mapping, Sequence

from pipeline.simulator import ids as idgen
from pipeline.simulator.catalog_loader import catalog_rows
from pipeline.simulator.entities import (
    FEATURE_NAMES,
    CatalogArtist,
    CatalogRow,
    CatalogTrack,
    Features,
    id_sort_key,
)
from pipeline.simulator.recommender import TARGET_RANGES, Recommender

# The country list of a recorded track (api notes §6): most tracks carry all of it.
ALL_COUNTRIES = (
    "AR,AU,AT,BE,BO,BR,BG,CA,CL,CO,CR,CY,CZ,DK,DO,DE,EC,EE,SV,FI,FR,GR,GT,HN,HK,HU,IS,IE,IT,LV,"
    "LT,LU,MY,MT,MX,NL,NZ,NI,NO,PA,PY,PE,PH,PL,PT,SG,SK,ES,SE,CH,TW,TR,UY,US,GB,AD,LI,MC,ID,JP,"
    "TH,VN,RO,IL,ZA,SA,AE,BH,QA,OM,KW,EG,MA,DZ,TN,LB,JO,PS,IN,BY,KZ,MD,UA,AL,BA,HR,ME,MK,RS,SI,"
    "KR,BD,PK,LK,GH,KE,NG,TZ,UG,AG,AM,BS,BB,BZ,BT,BW,BF,CV,CW,DM,FJ,GM,GE,GD,GW,GY,HT,JM,KI,LS,"
    "LR,MW,MV,ML,MH,FM,NA,NR,NE,PW,PG,PR,WS,SM,ST,SN,SC,SL,SB,KN,LC,VC,SR,TL,TO,TT,TV,VU,AZ,BN,"
    "BI,KH,CM,TD,KM,GQ,SZ,GA,GN,KG,LA,MO,MR,MN,NP,RW,TG,UZ,ZW,BJ,MG,MU,MZ,AO,CI,DJ,ZM,CD,CG,IQ,"
    "LY,TJ,VE,ET,XK"
)
_REGIONAL_COUNTRIES = "US,CA,MX,GB,IE,DE,AT,CH,FR,BE,NL,LU"

DEFAULT_UNKNOWN_FRACTION = 0.04
DEFAULT_NO_FEATURES_FRACTION = 0.05
DEFAULT_SHARED_ISRC_FRACTION = 0.01


class Catalog:
    """Immutable view of what the simulated API knows. Build it with ``Catalog.load``."""

    def __init__(
        self,
        rows: Sequence[CatalogRow],
        *,
        unknown_fraction: float = DEFAULT_UNKNOWN_FRACTION,
        no_features_fraction: float = DEFAULT_NO_FEATURES_FRACTION,
        shared_isrc_fraction: float = DEFAULT_SHARED_ISRC_FRACTION,
    ) -> None:
        self.unknown_fraction = unknown_fraction
        self.no_features_fraction = no_features_fraction
        self.all_spotify_ids: tuple[str, ...] = tuple(r.spotify_id for r in rows)
        artists: dict[str, CatalogArtist] = {}
        tracks: dict[str, CatalogTrack] = {}
        unknown: set[str] = set()
        for r in rows:
            if idgen.hash_fraction("unknown", r.spotify_id) < unknown_fraction:
                unknown.add(r.spotify_id)
                continue
            artist = artists.get(r.artist)
            if artist is None:
                artist = CatalogArtist(
                    reccobeats_id=idgen.uuid4_shaped("artist", r.artist),
                    spotify_id=idgen.base62_id("artist", r.artist),
                    name=r.artist,
                )
                artists[r.artist] = artist
            has_features = idgen.hash_fraction("no-features", r.spotify_id) >= no_features_fraction
            tracks[r.spotify_id] = CatalogTrack(
                spotify_id=r.spotify_id,
                reccobeats_id=reccobeats_id_for(r.spotify_id),
                title=r.title,
                artist=artist,
                duration_ms=r.duration_ms,
                popularity=r.popularity,
                isrc=idgen.isrc_for(r.spotify_id, r.decade),
                available_countries=_countries_for(r.spotify_id),
                decade=r.decade,
                features=r.features if has_features else None,
            )
        self._tracks = _share_some_isrcs(tracks, shared_isrc_fraction)
        self.known_spotify_ids: frozenset[str] = frozenset(self._tracks)
        self.unknown_spotify_ids: frozenset[str] = frozenset(unknown)
        self._by_uuid = {t.reccobeats_id: t for t in self._tracks.values()}
        self._by_isrc: dict[str, list[CatalogTrack]] = {}
        for t in sorted(self._tracks.values(), key=lambda t: id_sort_key(t.spotify_id)):
            self._by_isrc.setdefault(t.isrc, []).append(t)
        self._artists_sorted = tuple(
            sorted(artists.values(), key=lambda a: id_sort_key(a.spotify_id))
        )
        self._artist_by_uuid = {a.reccobeats_id: a for a in self._artists_sorted}
        by_artist: dict[str, list[CatalogTrack]] = {}
        for t in self._tracks.values():
            by_artist.setdefault(t.artist.reccobeats_id, []).append(t)
        self._artist_tracks = {
            k: tuple(sorted(v, key=lambda t: id_sort_key(t.spotify_id)))
            for k, v in by_artist.items()
        }
        self._matrix: Recommender | None = None
        self._matrix_lock = threading.Lock()

    # ----------------------------------------------------------------- construction
    @classmethod
    def load(
        cls,
        extra_synthetic: int = 0,
        seed: int = 0,
        *,
        unknown_fraction: float = DEFAULT_UNKNOWN_FRACTION,
        no_features_fraction: float = DEFAULT_NO_FEATURES_FRACTION,
        shared_isrc_fraction: float = DEFAULT_SHARED_ISRC_FRACTION,
    ) -> Catalog:
        """The bundled catalog plus ``extra_synthetic`` random tracks (seeded), memoised.

        Catalogs are immutable, so servers and tests built with the same arguments share one.
        """
        return _load_cached(
            extra_synthetic, seed, unknown_fraction, no_features_fraction, shared_isrc_fraction
        )

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._tracks)

    @property
    def size(self) -> int:
        """Number of tracks the API knows (the catalog minus the unknown fraction)."""
        return len(self._tracks)

    def track(self, spotify_id: str) -> CatalogTrack | None:
        """The track the API returns for ``spotify_id``, or None if the API does not know it."""
        return self._tracks.get(spotify_id)

    def track_by_uuid(self, reccobeats_id: str) -> CatalogTrack | None:
        return self._by_uuid.get(reccobeats_id.lower())

    def has_features(self, spotify_id: str) -> bool:
        t = self._tracks.get(spotify_id)
        return t is not None and t.features is not None

    def features(self, spotify_id: str) -> Features | None:
        t = self._tracks.get(spotify_id)
        return None if t is None else t.features

    def tracks(self) -> Iterable[CatalogTrack]:
        return self._tracks.values()

    def lookup(self, token: str) -> list[CatalogTrack]:
        """Tracks matching one ``ids`` entry (Spotify ID, UUID, upper-case ISRC); else []."""
        kind = idgen.id_kind(token)
        if kind == "spotify":
            t = self._tracks.get(token)
            return [t] if t else []
        if kind == "uuid":
            t = self._by_uuid.get(token.lower())
            return [t] if t else []
        if kind == "isrc":
            return list(self._by_isrc.get(token, ()))
        return []

    def lookup_many(self, tokens: Iterable[str]) -> list[CatalogTrack]:
        """What a batch endpoint returns: known matches, deduplicated, in Spotify-ID order."""
        found: dict[str, CatalogTrack] = {}
        for token in tokens:
            for t in self.lookup(token):
                found[t.spotify_id] = t
        return [found[k] for k in sorted(found, key=id_sort_key)]

    def resolve_seed(self, token: str) -> CatalogTrack | None:
        """Recommendation seeds take Spotify IDs or ReccoBeats UUIDs."""
        kind = idgen.id_kind(token)
        if kind == "spotify":
            return self._tracks.get(token)
        if kind == "uuid":
            return self._by_uuid.get(token.lower())
        return None

    # ----------------------------------------------------------------- artists
    @property
    def artists(self) -> tuple[CatalogArtist, ...]:
        """All artists, in case-insensitive Spotify-artist-ID order (not by relevance)."""
        return self._artists_sorted

    def artist(self, reccobeats_id: str) -> CatalogArtist | None:
        return self._artist_by_uuid.get(reccobeats_id.lower())

    def search_artists(self, text: str) -> list[CatalogArtist]:
        """Literal, case-insensitive substring match on the name, like the real search."""
        needle = text.casefold()
        return [a for a in self._artists_sorted if needle in a.name.casefold()]

    def artist_tracks(self, reccobeats_id: str) -> tuple[CatalogTrack, ...] | None:
        """The artist's known tracks in Spotify-ID order; None for an unknown artist."""
        a = self.artist(reccobeats_id)
        return None if a is None else self._artist_tracks.get(a.reccobeats_id, ())

    # ----------------------------------------------------------------- recommendations
    def recommend(
        self,
        seeds: Sequence[str],
        size: int,
        *,
        negative_seeds: Sequence[str] = (),
        targets: Mapping[str, float] | None = None,
        feature_weight: float = 1.0,
    ) -> list[CatalogTrack]:
        """Nearest neighbours of the mean seed feature vector (standardised features).

        Seeds and negative seeds never appear in the result. Negative seeds push the target
        away from their mean; explicit ``targets`` replace those dimensions of the target and
        weigh ``feature_weight`` times as much. Ties resolve in Spotify-ID order, so the answer
        is deterministic. Seeds that are unknown or have no features are ignored; with no usable
        seed the answer is empty.
        """
        with self._matrix_lock:  # built once, on first use (most runs never recommend)
            if self._matrix is None:
                self._matrix = Recommender(
                    [t for t in self._tracks.values() if t.features is not None]
                )
        return self._matrix.nearest(
            [t for t in map(self.resolve_seed, seeds) if t is not None],
            [t for t in map(self.resolve_seed, negative_seeds) if t is not None],
            size,
            targets or {},
            feature_weight,
        )


def reccobeats_id_for(spotify_id: str) -> str:
    """The ReccoBeats UUID the simulator gives a Spotify track ID (known or not)."""
    return idgen.uuid4_shaped("track", spotify_id)


def _countries_for(spotify_id: str) -> str:
    f = idgen.hash_fraction("countries", spotify_id)
    if f < 0.01:
        return ""  # the real API has tracks with no markets (api notes §3.1)
    if f < 0.06:
        return _REGIONAL_COUNTRIES
    return ALL_COUNTRIES


def _share_some_isrcs(tracks: dict[str, CatalogTrack], fraction: float) -> dict[str, CatalogTrack]:
    """Give a few tracks the ISRC of their neighbour: one ISRC can match several releases."""
    if fraction <= 0:
        return tracks
    ordered = sorted(tracks, key=id_sort_key)
    out = dict(tracks)
    for prev, sid in itertools.pairwise(ordered):
        if idgen.hash_fraction("shared-isrc", sid) < fraction:
            out[sid] = dataclasses.replace(tracks[sid], isrc=tracks[prev].isrc)
    return out


@functools.lru_cache(maxsize=8)
def _load_cached(
    extra_synthetic: int,
    seed: int,
    unknown_fraction: float,
    no_features_fraction: float,
    shared_isrc_fraction: float,
) -> Catalog:
    return Catalog(
        catalog_rows(extra_synthetic, seed),
        unknown_fraction=unknown_fraction,
        no_features_fraction=no_features_fraction,
        shared_isrc_fraction=shared_isrc_fraction,
    )


__all__ = [
    "DEFAULT_NO_FEATURES_FRACTION",
    "DEFAULT_SHARED_ISRC_FRACTION",
    "DEFAULT_UNKNOWN_FRACTION",
    "FEATURE_NAMES",
    "TARGET_RANGES",
    "Catalog",
    "CatalogArtist",
    "CatalogTrack",
    "Features",
    "id_sort_key",
    "reccobeats_id_for",
]

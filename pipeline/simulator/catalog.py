"""The simulator's catalog: which tracks the fake ReccoBeats knows, and what it says about them.

Built from the bundled ``data/catalog.csv.gz`` (a copy of the sample track list) so the demo
input and the simulated API agree, minus a deterministic ~4 % that the API "does not know" and
with ~5 % that have metadata but no audio features, because the real API has both gaps.
Tests use the same object to compute expected answers, so nothing here is random at run time:
every fate and every derived ID is a hash of the Spotify ID (see ``ids.py``).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import io
import itertools
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

import numpy as np

from pipeline.api.fields import FEATURE_COLUMNS as FEATURE_NAMES
from pipeline.api.fields import INT_FEATURES as _INT_FEATURES
from pipeline.simulator import ids as idgen

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

# Ranges the recommendation endpoint validates for feature targets (api notes §2.4).
TARGET_RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "acousticness": (0.0, 1.0),
        "danceability": (0.0, 1.0),
        "energy": (0.0, 1.0),
        "instrumentalness": (0.0, 1.0),
        "liveness": (0.0, 1.0),
        "speechiness": (0.0, 1.0),
        "valence": (0.0, 1.0),
        "key": (-1, 11),
        "loudness": (-60.0, 2.0),
        "mode": (0, 1),
        "tempo": (0.0, 250.0),
        "popularity": (0, 100),
    }
)


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
class _Row:
    spotify_id: str
    title: str
    artist: str
    popularity: int
    duration_ms: int
    decade: str
    features: Features


class Catalog:
    """Immutable view of what the simulated API knows. Build it with ``Catalog.load``."""

    def __init__(
        self,
        rows: Sequence[_Row],
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
        self._matrix: _FeatureMatrix | None = None
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
                self._matrix = _FeatureMatrix(
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


class _FeatureMatrix:
    """Standardised features (+ popularity) of the tracks that have features, in ID order."""

    def __init__(self, tracks: list[CatalogTrack]) -> None:
        self.tracks = sorted(tracks, key=lambda t: id_sort_key(t.spotify_id))
        self.columns = (*FEATURE_NAMES, "popularity")
        raw = np.array(
            [(*t.features.vector(), float(t.popularity)) for t in self.tracks if t.features],
            dtype=np.float64,
        ).reshape(len(self.tracks), len(self.columns))
        self.mean = raw.mean(axis=0) if len(raw) else np.zeros(len(self.columns))
        std = raw.std(axis=0) if len(raw) else np.ones(len(self.columns))
        self.std = np.where(std > 0, std, 1.0)
        self.z = (raw - self.mean) / self.std
        self.row_of = {t.spotify_id: i for i, t in enumerate(self.tracks)}

    def nearest(
        self,
        seeds: list[CatalogTrack],
        negatives: list[CatalogTrack],
        size: int,
        targets: Mapping[str, float],
        feature_weight: float,
    ) -> list[CatalogTrack]:
        seed_rows = [self.row_of[t.spotify_id] for t in seeds if t.spotify_id in self.row_of]
        if not seed_rows or size <= 0:
            return []
        n_feat = len(FEATURE_NAMES)
        weights = np.ones(len(self.columns))
        weights[n_feat] = 0.0  # popularity only matters when asked for
        target = self.z[seed_rows].mean(axis=0)
        neg_rows = [self.row_of[t.spotify_id] for t in negatives if t.spotify_id in self.row_of]
        if neg_rows:
            target = target + 0.5 * (target - self.z[neg_rows].mean(axis=0))
        for name, value in targets.items():
            j = self.columns.index(name)
            target[j] = (float(value) - self.mean[j]) / self.std[j]
            weights[j] = feature_weight
        dist = (((self.z - target) ** 2) * weights).sum(axis=1)
        excluded = {t.spotify_id for t in (*seeds, *negatives)}
        for sid in excluded:
            if sid in self.row_of:
                dist[self.row_of[sid]] = np.inf
        order = np.argsort(dist, kind="stable")
        out: list[CatalogTrack] = []
        for i in order:
            if len(out) >= size or not np.isfinite(dist[i]):
                break
            out.append(self.tracks[int(i)])
        return out


# --------------------------------------------------------------------- loading
def _read_bundled_rows() -> list[_Row]:
    raw = resources.files("pipeline.simulator").joinpath("data/catalog.csv.gz").read_bytes()
    text = io.StringIO(gzip.decompress(raw).decode("utf-8"))
    reader = csv.reader(text)
    header = next(reader)
    col = {name: i for i, name in enumerate(header)}
    rows: list[_Row] = []
    seen: set[str] = set()
    for rec in reader:
        sid = rec[col["track_id"]]
        if sid in seen:
            continue
        seen.add(sid)
        feats = {
            n: (int(float(rec[col[n]])) if n in _INT_FEATURES else float(rec[col[n]]))
            for n in FEATURE_NAMES
        }
        rows.append(
            _Row(
                spotify_id=sid,
                title=rec[col["track_name"]],
                artist=rec[col["track_artist"]],
                popularity=int(rec[col["track_popularity"]]),
                duration_ms=int(rec[col["duration_ms"]]),
                decade=rec[col["decade"]],
                features=Features(**feats),
            )
        )
    return rows


def _synthetic_rows(n: int, seed: int, taken: set[str]) -> list[_Row]:
    """``n`` random tracks for benchmarks: random base62 IDs, plausible random features."""
    rng = random.Random(seed)
    n_artists = max(1, n // 10)
    rows: list[_Row] = []
    for i in range(n):
        sid = "".join(rng.choices(idgen.BASE62, k=22))
        while sid in taken:
            sid = "".join(rng.choices(idgen.BASE62, k=22))
        taken.add(sid)
        feats = Features(
            acousticness=round(rng.random() ** 2, 4),
            danceability=round(rng.uniform(0.2, 0.98), 3),
            energy=round(rng.uniform(0.05, 1.0), 3),
            instrumentalness=round(rng.random() ** 6, 5),
            key=rng.randint(0, 11),
            liveness=round(rng.uniform(0.02, 0.8), 4),
            loudness=round(rng.uniform(-20.0, -1.0), 3),
            mode=rng.randint(0, 1),
            speechiness=round(rng.uniform(0.02, 0.4) ** 1.5, 4),
            tempo=round(rng.uniform(60.0, 200.0), 3),
            valence=round(rng.random(), 3),
        )
        rows.append(
            _Row(
                spotify_id=sid,
                title=f"Synthetic Track {i}",
                artist=f"Synthetic Artist {rng.randrange(n_artists)}",
                popularity=rng.randint(0, 100),
                duration_ms=rng.randint(90_000, 360_000),
                decade=rng.choice(("70s", "80s", "90s", "00s", "10s", "20s")),
                features=feats,
            )
        )
    return rows


@functools.lru_cache(maxsize=8)
def _bundled_rows() -> tuple[_Row, ...]:
    return tuple(_read_bundled_rows())


@functools.lru_cache(maxsize=8)
def _load_cached(
    extra_synthetic: int,
    seed: int,
    unknown_fraction: float,
    no_features_fraction: float,
    shared_isrc_fraction: float,
) -> Catalog:
    if extra_synthetic < 0:
        raise ValueError("extra_synthetic must be >= 0")
    rows = list(_bundled_rows())
    if extra_synthetic:
        rows += _synthetic_rows(extra_synthetic, seed, {r.spotify_id for r in rows})
    return Catalog(
        rows,
        unknown_fraction=unknown_fraction,
        no_features_fraction=no_features_fraction,
        shared_isrc_fraction=shared_isrc_fraction,
    )

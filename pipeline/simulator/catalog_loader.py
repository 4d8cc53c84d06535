"""Where the simulator's catalog rows come from: the bundled CSV and seeded synthetic tracks.

``data/catalog.csv.gz`` is a copy of the sample track list, so the demo input and the simulated
API agree. Benchmarks need more tracks than the sample has, so ``catalog_rows`` can append
``extra_synthetic`` random ones; the same seed always gives the same rows. Parsing is memoised:
the rows are immutable values and several servers in one test session share them.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import random
from importlib import resources

from pipeline.simulator import ids as idgen
from pipeline.simulator.entities import CatalogRow, Features


def _read_bundled_rows() -> list[CatalogRow]:
    raw = resources.files("pipeline.simulator").joinpath("data/catalog.csv.gz").read_bytes()
    text = io.StringIO(gzip.decompress(raw).decode("utf-8"))
    reader = csv.reader(text)
    header = next(reader)
    col = {name: i for i, name in enumerate(header)}
    rows: list[CatalogRow] = []
    seen: set[str] = set()
    for rec in reader:
        sid = rec[col["track_id"]]
        if sid in seen:
            continue
        seen.add(sid)

        def num(name: str, rec: list[str] = rec) -> float:
            return float(rec[col[name]])

        feats = Features(
            acousticness=num("acousticness"),
            danceability=num("danceability"),
            energy=num("energy"),
            instrumentalness=num("instrumentalness"),
            key=int(num("key")),
            liveness=num("liveness"),
            loudness=num("loudness"),
            mode=int(num("mode")),
            speechiness=num("speechiness"),
            tempo=num("tempo"),
            valence=num("valence"),
        )
        rows.append(
            CatalogRow(
                spotify_id=sid,
                title=rec[col["track_name"]],
                artist=rec[col["track_artist"]],
                popularity=int(rec[col["track_popularity"]]),
                duration_ms=int(rec[col["duration_ms"]]),
                decade=rec[col["decade"]],
                features=feats,
            )
        )
    return rows


def _synthetic_rows(n: int, seed: int, taken: set[str]) -> list[CatalogRow]:
    """``n`` random tracks for benchmarks: random base62 IDs, plausible random features."""
    rng = random.Random(seed)
    n_artists = max(1, n // 10)
    rows: list[CatalogRow] = []
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
            CatalogRow(
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
def bundled_rows() -> tuple[CatalogRow, ...]:
    """The bundled sample, parsed once (duplicated track IDs kept once)."""
    return tuple(_read_bundled_rows())


def catalog_rows(extra_synthetic: int = 0, seed: int = 0) -> list[CatalogRow]:
    """The bundled rows plus ``extra_synthetic`` seeded synthetic ones (IDs never collide)."""
    if extra_synthetic < 0:
        raise ValueError("extra_synthetic must be >= 0")
    rows = list(bundled_rows())
    if extra_synthetic:
        rows += _synthetic_rows(extra_synthetic, seed, {r.spotify_id for r in rows})
    return rows

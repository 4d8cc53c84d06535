"""The simulated recommendation endpoint's search: nearest neighbours in feature space.

Kept apart from the catalog index because it is the only numpy code in the simulator and most
runs never recommend: ``Catalog.recommend`` builds one ``Recommender`` lazily, on first use.
The answer is deterministic (stable sort, ties in Spotify-ID order), so tests can predict it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from pipeline.simulator.entities import FEATURE_NAMES, CatalogTrack, id_sort_key

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


class Recommender:
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

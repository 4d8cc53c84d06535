"""Field names the ReccoBeats API defines, shared by the parsers, caches, outputs and simulator.

A leaf module (no imports) so the state layer and the simulator can use the API's vocabulary
without importing the HTTP layer.
"""

#: The 11 audio features, spelled and ordered as the API spells them (also output columns).
FEATURE_COLUMNS: tuple[str, ...] = (
    "acousticness",
    "danceability",
    "energy",
    "instrumentalness",
    "key",
    "liveness",
    "loudness",
    "mode",
    "speechiness",
    "tempo",
    "valence",
)

#: Features the API sends as integers (-1..11 and 0/1); the rest are floats.
INT_FEATURES = frozenset({"key", "mode"})

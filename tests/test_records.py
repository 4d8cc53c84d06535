"""Parsers: recorded bodies parse, Spotify IDs come from href, bad items are skipped."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pipeline.api import records
from pipeline.api.records import FEATURE_COLUMNS, AudioFeatures, Track, spotify_id_from_href
from pipeline.errors import ResponseFormatError

# Copies of the recorded/documented bodies (see docs: reccobeats-api.md section 6).
EXAMPLES = Path(__file__).parent / "fixtures" / "reccobeats-examples"


def _example(name: str) -> object:
    return json.loads((EXAMPLES / name).read_text())


TRACK = {
    "id": "878dadea-33c5-4c08-bdb9-e2b117475a99",
    "trackTitle": "All Too Well",
    "artists": [
        {
            "id": "c7b330b5-a62e-420c-bf02-943ca6bb8746",
            "name": "Taylor Swift",
            "href": "https://open.spotify.com/artist/06HL4z0CvFAxyc27GXpf02",
        }
    ],
    "durationMs": 329160,
    "isrc": "USCJY1231021",
    "ean": None,
    "upc": None,
    "href": "https://open.spotify.com/track/00vJzaoxM3Eja1doBUhX0P",
    "availableCountries": "AR,AU,AT",
    "popularity": 34,
}

FEATURES = {
    "id": "8212bab8-5911-48a0-b177-24923ef2329a",
    "href": "https://open.spotify.com/track/00aqkszH1FdUiJJWvX6iEl",
    "isrc": "USUM72104140",
    "acousticness": 0.123,
    "danceability": 0.654,
    "energy": 0.789,
    "instrumentalness": 0.001,
    "key": 5,
    "liveness": 0.111,
    "loudness": -8.2,
    "mode": 1,
    "speechiness": 0.045,
    "tempo": 121.4,
    "valence": 0.612,
}


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("https://open.spotify.com/track/00vJzaoxM3Eja1doBUhX0P", "00vJzaoxM3Eja1doBUhX0P"),
        ("https://open.spotify.com/track/00vJzaoxM3Eja1doBUhX0P?si=abc", "00vJzaoxM3Eja1doBUhX0P"),
        ("https://open.spotify.com/track/00vJzaoxM3Eja1doBUhX0P#x", "00vJzaoxM3Eja1doBUhX0P"),
        ("https://open.spotify.com/track/00vJzaoxM3Eja1doBUhX0P/", "00vJzaoxM3Eja1doBUhX0P"),
        ("https://open.spotify.com/intl-de/track/00vJzaoxM3Eja1doBUhX0P", "00vJzaoxM3Eja1doBUhX0P"),
        ("https://open.spotify.com/artist/06HL4z0CvFAxyc27GXpf02", None),
        ("https://api.reccobeats.com/v1/audio-features/00vJzaoxM3Eja1doBUhX0P", None),
        ("spotify:track:00vJzaoxM3Eja1doBUhX0P", None),
        ("", None),
        (None, None),
        (42, None),
        ("https://open.spotify.com/track/", None),
    ],
)
def test_spotify_id_from_href(href: object, expected: str | None) -> None:
    assert spotify_id_from_href(href) == expected


def test_track_item_full() -> None:
    track = records.track_item(TRACK)
    assert track == Track(
        reccobeats_id="878dadea-33c5-4c08-bdb9-e2b117475a99",
        spotify_id="00vJzaoxM3Eja1doBUhX0P",
        title="All Too Well",
        artists=(
            records.Artist(
                "c7b330b5-a62e-420c-bf02-943ca6bb8746", "Taylor Swift", "06HL4z0CvFAxyc27GXpf02"
            ),
        ),
        duration_ms=329160,
        isrc="USCJY1231021",
        popularity=34,
        available_countries=("AR", "AU", "AT"),
        href="https://open.spotify.com/track/00vJzaoxM3Eja1doBUhX0P",
    )


def test_records_are_frozen_and_slotted() -> None:
    track = records.track_item(TRACK)
    with pytest.raises(AttributeError):
        track.title = "x"  # type: ignore[misc]
    assert not hasattr(track, "__dict__")


def test_track_optional_fields_missing_become_none() -> None:
    track = records.track_item({"id": "r1", "href": TRACK["href"]})
    assert track.title is None
    assert track.artists == ()
    assert track.duration_ms is None
    assert track.isrc is None
    assert track.popularity is None
    assert track.available_countries is None


def test_empty_available_countries_is_empty_tuple() -> None:
    track = records.track_item({**TRACK, "availableCountries": ""})
    assert track.available_countries == ()


def test_unknown_fields_are_ignored() -> None:
    track = records.track_item({**TRACK, "relevanceScore": 0.9, "brandNewField": {"x": 1}})
    assert track.spotify_id == "00vJzaoxM3Eja1doBUhX0P"


def test_name_only_nested_artist_is_accepted() -> None:
    track = records.track_item({**TRACK, "artists": [{"name": "Neon Bloom"}]})
    assert track.artists == (records.Artist(None, "Neon Bloom", None),)


def test_features_item_tolerates_ints_for_floats() -> None:
    feats = records.features_item({**FEATURES, "energy": 1, "tempo": 120})
    assert feats.energy == 1.0
    assert isinstance(feats.tempo, float)
    assert feats.key == 5
    assert feats.spotify_id == "00aqkszH1FdUiJJWvX6iEl"
    assert feats.reccobeats_id == "8212bab8-5911-48a0-b177-24923ef2329a"


def test_features_missing_values_become_none() -> None:
    feats = records.features_item({"id": "r", "href": FEATURES["href"]})
    assert all(getattr(feats, c) is None for c in FEATURE_COLUMNS)
    assert feats.isrc is None


def test_feature_columns_are_the_eleven_api_names() -> None:
    assert len(FEATURE_COLUMNS) == 11
    assert set(FEATURE_COLUMNS) <= set(AudioFeatures.__slots__)


@pytest.mark.parametrize(
    "patch",
    [
        {"energy": "0.5"},  # a string where a number belongs
        {"key": 5.5},  # a non-integral key
        {"mode": True},  # bool is not a number here
        {"tempo": float("nan")},
        {"id": None},
        {"id": ""},
        {"href": None},
        {"href": "https://open.spotify.com/album/71kWmMEYEnaabVomYXJUuk"},
    ],
)
def test_bad_feature_item(patch: dict) -> None:
    with pytest.raises(records.BadItem):
        records.features_item({**FEATURES, **patch})


@pytest.mark.parametrize(
    "patch",
    [{"artists": "Queen"}, {"artists": ["Queen"]}, {"durationMs": "329160"}, {"trackTitle": 7}],
)
def test_bad_track_item(patch: dict) -> None:
    with pytest.raises(records.BadItem):
        records.track_item({**TRACK, **patch})


def test_parse_tracks_skips_bad_items_and_duplicates() -> None:
    other = {**TRACK, "id": "r2", "href": "https://open.spotify.com/track/1111111111111111111111"}
    dup = {**TRACK, "id": "r3"}  # same href as TRACK: a second release, keep the first
    body = {"content": [TRACK, "junk", {"id": "x"}, other, dup]}
    parsed = records.parse_tracks(body, "tracks")
    assert [t.reccobeats_id for t in parsed.items] == [TRACK["id"], "r2"]
    assert parsed.bad_items == 2
    assert parsed.duplicates == 1


@pytest.mark.parametrize(
    "body",
    [[], "x", None, {"content": None}, {"content": {"a": 1}}, {"items": []}],
)
def test_body_of_wrong_shape_names_endpoint(body: object) -> None:
    with pytest.raises(ResponseFormatError) as info:
        records.parse_tracks(body, "tracks")
    assert info.value.endpoint == "tracks"
    assert "endpoint=tracks" in str(info.value)


def test_all_items_bad_is_a_body_error() -> None:
    with pytest.raises(ResponseFormatError):
        records.parse_features_list({"content": [{"foo": 1}, {"bar": 2}]}, "audio_features")


def test_empty_content_is_fine() -> None:
    assert records.parse_tracks({"content": []}, "tracks").items == ()


@pytest.mark.parametrize(
    "name",
    [
        "track_recommendation__recorded.json",
        "artist_track__recorded.json",
        "track_multiple_by_isrc__fixture.json",
    ],
)
def test_recorded_track_lists_parse_cleanly(name: str) -> None:
    body = _example(name)
    parsed = records.parse_tracks(body, "tracks")
    assert parsed.bad_items == 0
    assert len(parsed.items) == len(body["content"])  # type: ignore[index]
    for track, raw in zip(parsed.items, body["content"], strict=True):  # type: ignore[index]
        assert raw["href"].endswith("/" + track.spotify_id)
        assert track.reccobeats_id == raw["id"]


def test_recorded_features_parse_cleanly() -> None:
    body = _example("audio_features_multiple__fixture.json")
    parsed = records.parse_features_list(body, "audio_features")
    assert [f.spotify_id for f in parsed.items] == ["00aqkszH1FdUiJJWvX6iEl"]
    single = records.parse_features_list(
        {"content": [_example("track_audio_features__fixture.json")]}, "audio_features"
    ).items[0]
    assert single.spotify_id == "spotify-track-001"
    assert single.key == 8


def test_parsing_does_not_mutate_input() -> None:
    body = {"content": [copy.deepcopy(TRACK)]}
    before = copy.deepcopy(body)
    records.parse_tracks(body, "tracks")
    assert body == before

"""reccobeats-etl: enrich Spotify track lists through the rate-limited ReccoBeats API."""

__version__ = "0.1.0"

"""The event log: Segment-spec ingest, de-duplication, and the worker that applies it."""

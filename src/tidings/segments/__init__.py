"""Stored segments: a named condition (docs/conditions.md) whose members are materialised
in `segment_memberships` and kept current by the worker. `definitions` stores and checks
them, `membership` rebuilds and re-evaluates sets in SQL (writing Segment Entered / Left
events), `refresh` is the worker task, `reading` answers previews, members and explains.
docs/segments.md is the guide."""

"""The one condition language (DESIGN.md §4), learnt once and compiled once: `model.parse`
reads it into nodes, `sql.compile` turns a node into a WHERE clause over contacts (sets:
segments, previews), `evaluate.evaluate` / `evaluate.explain` decide it for one contact
from a `snapshot.load` (flow branches, exits, waits, "why is this contact in?").
Segments, flow `if` branches, entry filters, `exit_when` and `wait_until` all use it;
docs/conditions.md is the reference."""

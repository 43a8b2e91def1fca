"""The store: engine set-up, tables and migrations."""

"""ESDB: the immutable cold-tier file format (see docs/FORMAT.md)."""

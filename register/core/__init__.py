"""Core data types: point clouds and transforms (no I/O, no CLI)."""

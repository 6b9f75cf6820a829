"""Long-term memory: per-user facts with provenance, stored through mem0. Knows no bot and no platform."""

"""The orchestration layer: the pipeline that owns entity changes → decide → act → audit, and its map."""

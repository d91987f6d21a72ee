"""The orchestration layer: the pipeline (entity changes → decide → act → audit) and the map of it."""

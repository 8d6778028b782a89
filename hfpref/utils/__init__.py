"""Small helpers shared across hfpref: crash-safe records and output-folder locks, checks before saving a model."""

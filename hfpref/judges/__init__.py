"""Judges that score candidate captions to build preference pairs (clue overlap, CLAP reward model, LLM)."""

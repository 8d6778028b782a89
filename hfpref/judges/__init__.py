"""
Judges that score candidate captions to build preference pairs (clue overlap, CLAP reward model, LLM), and the
synthetic world's oracle, which grades captions against a clip's true events in place of human annotators.
"""

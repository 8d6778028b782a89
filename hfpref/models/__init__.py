"""
What hfpref trains or decodes with: the CLAP reward model, seq2seq captioner decoding, the text-to-audio pipeline.
Frozen feature extractors (CLAP embedder, speech tokenizer) live in `hfpref.encoders`.
"""

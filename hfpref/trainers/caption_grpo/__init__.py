"""Decoder-only captioners (audio as speech tokens) trained with TRL's GRPOTrainer / RLOOTrainer and hfpref rewards."""

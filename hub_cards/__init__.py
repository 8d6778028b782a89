"""Card templates (model, reward model, dataset), shipped in the wheel as ``hfpref.hub_cards``."""

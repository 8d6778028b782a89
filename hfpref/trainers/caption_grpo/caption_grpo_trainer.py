from trl import GRPOTrainer

from ..base_trainer import TrainedAdapterSaveMixin


class CaptionGRPOTrainer(TrainedAdapterSaveMixin, GRPOTrainer):
    """
    TRL's [`~trl.GRPOTrainer`] for decoder-only captioners, saving only the trained adapter of a LoRA policy (see
    [`~hfpref.trainers.base_trainer.TrainedAdapterSaveMixin`]).
    """

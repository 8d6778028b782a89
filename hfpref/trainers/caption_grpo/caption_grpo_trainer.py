from trl import GRPOTrainer

from ..base_trainer import TrainedAdapterSaveMixin
from ..caption_rl.caption_rl_trainer import disable_dropout


class CaptionGRPOTrainer(TrainedAdapterSaveMixin, GRPOTrainer):
    """
    TRL's [`~trl.GRPOTrainer`] for decoder-only captioners, saving only the trained adapter of a LoRA policy (see
    [`~hfpref.trainers.base_trainer.TrainedAdapterSaveMixin`]).

    With `args.disable_dropout` (on by default in [`~hfpref.trainers.caption_grpo.CaptionGRPOConfig`]) every dropout
    of the policy and the reference is off, also the float probabilities TRL's `disable_dropout_in_model` leaves
    alone ([`~hfpref.trainers.caption_rl.caption_rl_trainer.disable_dropout`]).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.args, "disable_dropout", False):
            for model in (self.model, getattr(self, "ref_model", None)):
                if model is not None:
                    disable_dropout(model)

from trl import GRPOTrainer

from ...encoders.speech_tokens import prepare_fused_lm_head
from ...utils.checks import check_training_losses, resolve_resume_checkpoint
from ..base_trainer import TrainedAdapterSaveMixin
from ..caption_rl.caption_rl_trainer import disable_dropout


class CaptionGRPOTrainer(TrainedAdapterSaveMixin, GRPOTrainer):
    """
    TRL's [`~trl.GRPOTrainer`] for decoder-only captioners, saving only the trained adapter of a LoRA policy (see
    [`~hfpref.trainers.base_trainer.TrainedAdapterSaveMixin`]).

    With `args.disable_dropout` (on by default in [`~hfpref.trainers.caption_grpo.CaptionGRPOConfig`]) every dropout
    of the policy and the reference is off, also the float probabilities TRL's `disable_dropout_in_model` leaves
    alone ([`~hfpref.trainers.caption_rl.caption_rl_trainer.disable_dropout`]).

    `train` checks as hfpref's own trainers do ([`~hfpref.trainers.base_trainer.BaseTrainer.train`]): resuming skips
    a newest checkpoint torn by a kill (naming it), and a log whose loss went non-finite or diverged (the last loss
    more than 100x the first logged one) raises instead of returning to a script that would save the model.

    A tied LM head whose speech-token rows peft trains is made readable by TRL's fused head
    ([`~hfpref.encoders.speech_tokens.prepare_fused_lm_head`]).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        prepare_fused_lm_head(self.model)
        if getattr(self.args, "disable_dropout", False):
            for model in (self.model, getattr(self, "ref_model", None)):
                if model is not None:
                    disable_dropout(model)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        resume_from_checkpoint = resolve_resume_checkpoint(self.args.output_dir, resume_from_checkpoint)
        output = super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )
        check_training_losses(self.state.log_history, what=f"the model for {self.args.output_dir}")
        return output

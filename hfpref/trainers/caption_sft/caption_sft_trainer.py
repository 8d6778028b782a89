from transformers import Seq2SeqTrainer

from ..base_trainer import BaseTrainer


class CaptionSFTTrainer(BaseTrainer, Seq2SeqTrainer):
    """
    Supervised fine-tuning of a seq2seq audio captioner: transformers' [`~transformers.Seq2SeqTrainer`] (give it a
    [`CaptionSFTConfig`] and a [`~hfpref.models.captioning.CaptionCollator`]), with hfpref's model card
    ([`~hfpref.trainers.base_trainer.BaseTrainer.create_model_card`]) and the token-weighted cross-entropy of the
    global batch as its loss ([`~hfpref.trainers.base_trainer.BaseTrainer._token_mean_cross_entropy`]: Whisper's own
    loss ignores transformers' `num_items_in_batch`, which multiplied it by the accumulation steps and processes).
    """

    _name = "caption_sft"
    _tag_names = ["hfpref", "caption-sft"]
    _card_metric = "eval_loss"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.compute_loss_func is not None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return self._token_mean_cross_entropy(model, inputs, return_outputs, num_items_in_batch)

    def _card_training_args(self) -> dict:
        return {"learning_rate": self.args.learning_rate, "epochs": self.args.num_train_epochs}

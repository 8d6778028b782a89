from transformers import Seq2SeqTrainer

from ..base_trainer import BaseTrainer


class CaptionSFTTrainer(BaseTrainer, Seq2SeqTrainer):
    """
    Supervised fine-tuning of a seq2seq audio captioner: transformers' [`~transformers.Seq2SeqTrainer`] as it is (give
    it a [`CaptionSFTConfig`] and a [`~hfpref.models.captioning.CaptionCollator`]), with hfpref's model card
    ([`~hfpref.trainers.base_trainer.BaseTrainer.create_model_card`]).
    """

    _name = "caption_sft"
    _tag_names = ["hfpref", "caption-sft"]
    _card_metric = "eval_loss"

    def _card_training_args(self) -> dict:
        return {"learning_rate": self.args.learning_rate, "epochs": self.args.num_train_epochs}

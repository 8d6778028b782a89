import dataclasses

from transformers import Seq2SeqTrainer

from ...models.captioning import CaptionCollator, prepare_captioner
from ..base_trainer import BaseTrainer


class CaptionSFTTrainer(BaseTrainer, Seq2SeqTrainer):
    """
    Supervised fine-tuning of a seq2seq audio captioner: transformers' [`~transformers.Seq2SeqTrainer`] (give it a
    [`CaptionSFTConfig`] and a [`~hfpref.models.captioning.CaptionCollator`]), with hfpref's model card
    ([`~hfpref.trainers.base_trainer.BaseTrainer.create_model_card`]) and the token-weighted cross-entropy of the
    global batch as its loss ([`~hfpref.trainers.base_trainer.BaseTrainer._token_mean_cross_entropy`]: Whisper's own
    loss ignores transformers' `num_items_in_batch`, which multiplied it by the accumulation steps and processes).

    The captioner's decoder prompt is fixed first ([`~hfpref.models.captioning.prepare_captioner`], in the language
    `args.caption_language`, written into its generation config and so into every checkpoint), and a
    [`~hfpref.models.captioning.CaptionCollator`] trains the captions after exactly that prompt: the one decoding
    (evaluation, RL rollouts, the ASR pipeline) forces.
    """

    _name = "caption_sft"
    _tag_names = ["hfpref", "caption-sft"]
    _card_metric = "eval_loss"

    def __init__(
        self,
        model=None,
        args=None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        **kwargs,
    ):
        if model is not None and args is not None:
            tokenizer = getattr(processing_class, "tokenizer", processing_class)
            prefix = prepare_captioner(model, tokenizer, language=getattr(args, "caption_language", None))
            if isinstance(data_collator, CaptionCollator) and data_collator.caption_column is not None:
                if data_collator.decoder_prompt is None:
                    data_collator = dataclasses.replace(data_collator, decoder_prompt=prefix)
                elif list(data_collator.decoder_prompt) != prefix:
                    raise ValueError(
                        f"the collator trains captions after {list(data_collator.decoder_prompt)}, but the captioner "
                        f"decodes after {prefix}"
                    )
        super().__init__(
            model,
            args,
            data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.compute_loss_func is not None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return self._token_mean_cross_entropy(model, inputs, return_outputs, num_items_in_batch)

    def _card_training_args(self) -> dict:
        return {"learning_rate": self.args.learning_rate, "epochs": self.args.num_train_epochs}

"""The audibility classifier (a 2-label sequence classifier over captions) built from configs for offline runs."""

from collections.abc import Iterable

import torch


def build_tiny_audibility_classifier(texts: Iterable[str], *, hidden_size: int = 32, seed: int = 0):
    """
    A 2-layer DistilBERT sequence classifier (2 labels) with a WordPiece tokenizer trained on `texts` (offline,
    random weights).

    Returns:
        `(DistilBertForSequenceClassification, PreTrainedTokenizerFast)`.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.train_from_iterator(list(texts), trainers.WordPieceTrainer(vocab_size=1000, special_tokens=special))
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=hidden_size,
        hidden_dim=2 * hidden_size,
        n_layers=2,
        n_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
        id2label={0: "non_audible", 1: "audible"},
        label2id={"non_audible": 0, "audible": 1},
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DistilBertForSequenceClassification(config)
    return model, tokenizer

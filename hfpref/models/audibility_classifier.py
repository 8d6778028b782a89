"""The audibility classifier (a 2-label sequence classifier over captions) built from configs for offline runs."""

from collections.abc import Iterable

import torch


def build_tiny_audibility_classifier(
    texts: Iterable[str], *, hidden_size: int = 32, seed: int = 0, dropout: float | None = None
):
    """
    A 2-layer DistilBERT sequence classifier (2 labels) with a WordPiece tokenizer learned on `texts`
    ([`wordpiece_vocabulary`]: the same texts give the same vocabulary in every process) (offline, random weights).
    `dropout` sets every dropout of the model (`None`: DistilBERT's defaults).

    Returns:
        `(DistilBertForSequenceClassification, PreTrainedTokenizerFast)`.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend = Tokenizer(models.WordPiece(wordpiece_vocabulary(texts, normalizer, pre_tokenizer), unk_token="[UNK]"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.WordPiece()
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
    if dropout is not None:
        config.dropout = config.attention_dropout = config.seq_classif_dropout = dropout
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DistilBertForSequenceClassification(config)
    return model, tokenizer


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocabulary(texts: Iterable[str], normalizer, pre_tokenizer, vocab_size: int = 1000) -> dict[str, int]:
    """
    A WordPiece vocabulary learned on `texts`, the same for the same texts in every process and every run: the pieces
    of byte-pair merges (`tokenizers`' BPE trainer, which numbers the characters and the merges in a fixed order),
    each one word-initial and as a `##` continuation, after the special tokens, up to `vocab_size` entries.
    (`tokenizers`' WordPiece trainer numbers its `##` pieces in hash-map order: every process of a launch and every
    run trained another vocabulary.)

    Example:
    ```python
    >>> from tokenizers import normalizers, pre_tokenizers
    >>> normalizer, pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
    >>> vocab = wordpiece_vocabulary(["A dog barks.", "The dog barks."], normalizer, pre_tokenizer)
    >>> vocab == wordpiece_vocabulary(["A dog barks.", "The dog barks."], normalizer, pre_tokenizer)
    True
    >>> [token for token in vocab if token.endswith("barks")]
    ['barks', '##barks']

    ```
    """
    from tokenizers import Tokenizer, models, trainers

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size // 2, special_tokens=SPECIAL_TOKENS, show_progress=False)
    bpe.train_from_iterator(list(texts), trainer)
    pieces = [piece for piece, _ in sorted(bpe.get_vocab().items(), key=lambda item: item[1])]
    tokens = SPECIAL_TOKENS + [
        token for piece in pieces if piece not in SPECIAL_TOKENS for token in (piece, f"##{piece}")
    ]
    return {token: i for i, token in enumerate(tokens[:vocab_size])}

import random
from dataclasses import dataclass

import pytest
import torch


NOUNS = ["dog", "car", "man", "bird", "door", "train", "child", "river"]
AUDIBLE_WORDS = ["barks", "rumbles", "shouts", "sings", "creaks", "whistles"]
SILENT_WORDS = ["shines", "glows", "sparkles", "rests", "stands", "waits"]


@dataclass
class WordWorld:
    lm: object
    lm_tokenizer: object
    classifier: object
    nouns: list
    audible_words: list
    silent_words: list


def _word_tokenizer(words):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins word pieces with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


@pytest.fixture(scope="session")
def word_world() -> WordWorld:
    """
    A tiny GPT-2 trained on "<setting> the <noun> <word> ." where after the setting "at" 85% of the words are silent
    (greedy decoding of "at the <noun>" never says an audible one) and after "in" 85% are audible, and a tiny DistilBERT classifier trained to tell the audible words from the silent ones.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    from hfpref.metrics.audibility import AudibilityClassifier
    from hfpref.models.audibility_classifier import build_tiny_audibility_classifier

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = random.Random(0)
    words = ["the", ".", "at", "in", *NOUNS, *AUDIBLE_WORDS, *SILENT_WORDS]
    tokenizer = _word_tokenizer(words)
    # The setting word is what the cache can carry: "at" scenes are mostly silent, "in" scenes mostly audible.
    sentences = []
    for _ in range(1024):
        setting = rng.choice(["at", "in"])
        audible = rng.random() < (0.15 if setting == "at" else 0.85)
        sentences.append(
            f"{setting} the {rng.choice(NOUNS)} {rng.choice(AUDIBLE_WORDS if audible else SILENT_WORDS)} ."
        )
    ids = torch.tensor([[1, *tokenizer(s, add_special_tokens=False)["input_ids"], 2] for s in sentences])
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=16,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    )
    optimizer = torch.optim.Adam(lm.parameters(), lr=3e-3)
    for _ in range(300):
        batch = ids[torch.randint(len(ids), (64,))]
        loss = lm(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    lm.zero_grad(set_to_none=True)
    lm.eval()

    # Audible iff an audible word occurs: whole sentences, and word salads (what a candidate continuation can look
    # like) with and without one, so that a continuation is not called audible just for being unusual.
    labelled = [(f"the {n} {w} .", int(w in AUDIBLE_WORDS)) for n in NOUNS for w in AUDIBLE_WORDS + SILENT_WORDS]
    for _ in range(len(labelled)):
        salad = rng.choices(["the", ".", "at", "in", *NOUNS, *SILENT_WORDS], k=rng.randint(1, 6))
        labelled.append((" ".join(salad), 0))
        labelled.append((" ".join([*salad, rng.choice(AUDIBLE_WORDS)]), 1))
    model, cls_tokenizer = build_tiny_audibility_classifier([s for s, _ in labelled], hidden_size=32, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(120):
        chunk = rng.sample(labelled, 32)
        batch = cls_tokenizer([s for s, _ in chunk], padding=True, return_tensors="pt")
        loss = model(**batch, labels=torch.tensor([y for _, y in chunk])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    classifier = AudibilityClassifier(model, cls_tokenizer)
    torch.set_num_threads(threads)
    return WordWorld(lm, tokenizer, classifier, NOUNS, AUDIBLE_WORDS, SILENT_WORDS)

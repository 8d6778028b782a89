"""
The emotional-clue vocabulary of hfpref's acoustic prompts, written for this project.

AlignCap ([Liang et al., 2024](https://huggingface.co/papers/2410.19134), section 3.1) counts as emotional clues the
adjectives of a caption that describe the speaker's tone, intonation, pitch, rhythm and volume, plus the emotion
itself, filtered by a vocabulary; the paper does not publish its vocabulary, so this is ours. Each canonical clue
(the word the acoustic prompt writes) lists the surface forms that name it in a caption: adverbs (`slowly`),
comparatives (`louder`), nouns of emotion (`anger`) and synonyms (`furious`). Multi-word forms (`high pitch`) are
joined with a hyphen before tagging. Keep a surface form under one clue only (a test checks this).
"""

CLUE_CATEGORIES = ("emotion", "pitch", "rhythm", "volume", "intonation", "tone")

CLUE_VOCABULARY: dict[str, dict[str, tuple[str, ...]]] = {
    "emotion": {
        "angry": ("angry", "angrily", "anger", "furious", "furiously", "annoyed", "irritated", "mad"),
        "happy": ("happy", "happily", "happiness", "cheerful", "cheerfully", "joyful", "joyfully", "delighted"),
        "sad": ("sad", "sadly", "sadness", "upset", "sorrowful", "unhappy", "gloomy", "melancholy"),
        "fearful": ("fearful", "fearfully", "fear", "scared", "afraid", "frightened", "nervous", "nervously"),
        "calm": ("calm", "calmly", "peaceful", "peacefully", "relaxed", "serene", "composed"),
        "neutral": ("neutral", "matter-of-fact", "unemotional", "indifferent"),
        "surprised": ("surprised", "surprise", "astonished", "amazed", "shocked"),
        "excited": ("excited", "excitedly", "excitement", "enthusiastic", "enthusiastically", "thrilled"),
        "disgusted": ("disgusted", "disgust", "repulsed"),
    },
    "pitch": {
        "high-pitched": ("high-pitched", "high-pitch", "high", "higher", "shrill", "squeaky"),
        "low-pitched": ("low-pitched", "low-pitch", "low", "lower", "deep", "deeper"),
    },
    "rhythm": {
        "fast": ("fast", "faster", "quick", "quickly", "rapid", "rapidly", "hurried", "hurriedly", "brisk", "briskly"),
        "slow": ("slow", "slowly", "slower", "leisurely", "unhurried", "drawn-out", "sluggish"),
        "halting": ("halting", "hesitant", "hesitantly", "stuttering", "choppy"),
        "steady": ("steady", "steadily", "regular", "measured"),
    },
    "volume": {
        "loud": (
            "loud",
            "loudly",
            "louder",
            "high-volume",
            "booming",
            "shout",
            "shouts",
            "shouted",
            "shouting",
            "yells",
            "yelling",
            "forceful",
            "forcefully",
        ),
        "soft": (
            "soft",
            "softly",
            "softer",
            "quiet",
            "quietly",
            "quieter",
            "low-volume",
            "hushed",
            "whisper",
            "whispers",
            "whispered",
            "whispering",
            "faint",
        ),
    },
    "intonation": {
        "rising": ("rising", "rises", "upward", "questioning"),
        "falling": ("falling", "falls", "downward", "descending"),
        "flat": ("flat", "monotone", "monotonous"),
        "expressive": ("expressive", "lively", "animated", "varied"),
    },
    "tone": {
        "gentle": ("gentle", "gently", "warm", "warmly", "tender", "tenderly"),
        "harsh": ("harsh", "harshly", "sharp", "sharply", "stern", "sternly", "cold", "coldly"),
        "trembling": ("trembling", "shaky", "shaking", "quivering", "tremulous"),
        "tense": ("tense", "tensely", "strained", "tight"),
        "breathy": ("breathy", "airy"),
    },
}

# Multi-word surface forms, joined before tagging so that the tagger sees one token.
MULTIWORD_FORMS = {
    "high volume": "high-volume",
    "low volume": "low-volume",
    "high pitched": "high-pitched",
    "high pitch": "high-pitch",
    "low pitched": "low-pitched",
    "low pitch": "low-pitch",
    "matter of fact": "matter-of-fact",
    "drawn out": "drawn-out",
}

# Words that negate the clues right after them ("not angry", "without anger", "neither loud nor fast").
NEGATORS = ("not", "never", "no", "without", "neither", "nor", "hardly", "barely", "isn't", "wasn't", "doesn't")

"""
The offline synthetic worlds, which stand in for real data when no dataset can be downloaded:

- [`~hfpref.data.synthetic.audio_world`]: clips of one to three sound events in time order, with true captions and
  the event list (the world of the quickstart, captioning, CLAP and text-to-audio); its oracle judge is
  [`~hfpref.judges.oracle`];
- [`~hfpref.data.synthetic.speech_world`]: spoken clips whose emotion and prosody are known, captioned with them
  (speech-emotion captioning, AlignCap).
"""

from .audio_world import (
    EVENT_KINDS,
    EVENTS,
    caption_for,
    make_caption_variants,
    make_world,
    parse_events,
)
from .speech_world import (
    EMOTIONS,
    caption_alternatives,
    make_speech_world,
    speech_caption,
    speech_emotion_splits,
)


__all__ = [
    "EMOTIONS",
    "EVENTS",
    "EVENT_KINDS",
    "caption_alternatives",
    "caption_for",
    "make_caption_variants",
    "make_speech_world",
    "make_world",
    "parse_events",
    "speech_caption",
    "speech_emotion_splits",
]

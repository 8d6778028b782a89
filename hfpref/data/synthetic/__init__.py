"""The offline synthetic worlds: procedural audio events with true captions, and synthetic emotional speech."""

"""Prompt builders: acoustic prompts of emotional clues (AlignCap) and text-to-audio prompts (BATON)."""

"""Backbones, heads, the transfer classifier and the LM scorer (torch + transformers only)."""

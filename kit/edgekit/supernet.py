"""LightHuBERT supernet (written by the supernet work; placeholder keeps imports working)."""

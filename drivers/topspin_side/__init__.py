"""The TopSpin-side automation script (shipped as package data; runs inside TopSpin)."""

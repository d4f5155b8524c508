"""Talking to instruments: spectrometer via TopSpin automation files, VT unit, battery cycler. Imports nothing else of exsylab."""

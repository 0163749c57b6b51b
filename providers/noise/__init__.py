"""Noise filters: `session.interfaces.NoiseFilter`s that clean caller audio before the VAD.

Each module holds one filter; import the one you use (the spectral gate needs numpy, the
passthrough nothing).
"""

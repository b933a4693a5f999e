"""Modeling layer: the frozen SAM image encoders, checkpoint reading, fast attention, the 3D
residual decoder, the SAM3D module and its builders, losses.

Imports only ``sam3dlib.utils`` (and ``sam3dlib.config`` for building from a config).
"""

"""Modeling layer: the frozen SAM image encoders, checkpoint reading, fast attention, the 3D
residual decoder, the SAM3D module and its builders, losses.

Imports only ``sam3dlib.utils`` (``factory.build_model`` takes an experiment config as an argument;
``sam3dlib.config`` sits above this layer and uses its crop check).
"""

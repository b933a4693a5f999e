"""Modeling layer: the frozen SAM image encoders, checkpoint reading, fast attention, the 3D
residual decoder, the SAM3D module and its builders, losses.

May import ``sam3dlib.utils`` and ``sam3dlib.data`` (docs/DESIGN.md, "Layers"); today it uses
only ``sam3dlib.utils``: ``factory.build_model`` takes the experiment config and the dataset spec
as arguments, and ``sam3dlib.config`` sits above this layer and uses its crop check.
"""

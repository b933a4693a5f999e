"""Inference layer: sliding-window prediction with mirroring (array level) and the predictor
(run directory + NIfTI in, NIfTI out).

Imports modeling, data, utils and config; never training, evaluation or the study layer.
"""

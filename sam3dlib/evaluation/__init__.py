"""Evaluation layer: DSC/HD95 metrics and the evaluation of a folder of predictions.

Imports data and utils only.
"""

"""Truly shared helpers: crash-safe file writes, device names, out-of-memory fallbacks,
the CPU host-memory setting. Imports nothing else from sam3dlib.
"""

"""Truly shared helpers: crash-safe file writes, device names, value checking, the project's
error types, out-of-memory fallbacks, the CPU host-memory setting. Imports nothing else from
sam3dlib.
"""

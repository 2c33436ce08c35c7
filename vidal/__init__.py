"""vidal: VIDAL-style multi-modal datasets (video, language, depth, infrared, audio)."""

__version__ = "0.1.0"

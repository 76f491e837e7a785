"""samcl: continual learning for Segment Anything (SAMCL)."""
__version__ = "0.1.0"

"""Neural networks of matscreen, installed as ``screening.models``."""

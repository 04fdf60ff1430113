"""musicdistill: diversity-rewarded CFG distillation for text-to-music token generators."""

__version__ = "0.1.0"

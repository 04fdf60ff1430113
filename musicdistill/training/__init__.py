"""Training loops and what they share: the loop kit, base pretraining, diversity-rewarded CFG distillation and its set-up, losses, torch.distributed."""

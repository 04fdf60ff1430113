"""What training and the judges write to disk: atomic writes, safetensors checkpoints with provenance, model folders, training history."""

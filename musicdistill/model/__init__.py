"""The token generator: decoder transformer, delay pattern, text conditioning, the MusicGen backbone, loading a checkpoint into a model."""

"""Audio tokenizers behind one interface: the Codec protocol and codec.json, the fitted mel-RVQ codec, the EnCodec adapters, and the factory that picks one."""

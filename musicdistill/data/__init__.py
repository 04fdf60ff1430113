"""Captioned audio: the built-in synthesised set (captions, render, synth), user manifests and audio loading, token sets, encoded captions."""

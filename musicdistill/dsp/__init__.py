"""Signal processing in torch: resampling, the log-mel spectrogram and its inverse, loudness."""

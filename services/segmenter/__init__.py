"""segmenter: account features and segment membership."""

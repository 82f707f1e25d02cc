"""Training, evaluation and data preparation for the detection model (never imported by the stream)."""

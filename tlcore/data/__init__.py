"""Images in: decoding, archives, dataset import, checks and reports, the input pipeline."""

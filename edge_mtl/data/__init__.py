"""Shared data handling for training, evaluation and the export tools: image reading, data sets as face records,
the aligned-crop cache."""

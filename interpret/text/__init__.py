"""Text in: the character vocabulary, corpora and their recipes, the planted synthetic corpus."""

"""Data: corpora, tokenizers, the joint vocabulary and Grain input pipelines."""

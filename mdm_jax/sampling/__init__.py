"""Sampling and evaluation of trained runs: samplers, decoding, ELBO and sample quality, inference defaults.

samplers   jitted random / confidence top-k / threshold samplers, semi-AR blocks, float64 Gumbel
requests   generation requests in the training layout (text prefix or infill, caption -> image, text -> speech)
decode     token streams -> text, PNG, WAV through the run's tokenizers
runs       a run directory loaded for inference (config, sharded parameters, denoiser)
generate   `mdm-lab sample` as a function
evaluate   validation ELBO with standard errors; gen-PPL, token entropy, reconstruction-space distances
reference  the n-gram reference model for generative perplexity
heldout    the held-out data samples are judged against
defaults   the inference-defaults sweep (table, figure, stored defaults)
"""

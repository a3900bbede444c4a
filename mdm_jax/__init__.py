"""mdm_jax: the masked-diffusion model, its objective and its sharded trainer."""

__version__ = "0.1.0"

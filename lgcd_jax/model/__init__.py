"""Model: sequence encoders, the conditional diffusion and its denoiser."""

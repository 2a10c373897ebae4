"""The result in formulas (THEORY.md sections 1-5): exponential families (sigma = a'),
kernels, windowed kernels as conv filters, and the exact kGLM solver."""

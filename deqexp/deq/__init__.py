"""Equilibrium layers and how they are solved: the DEQ layers (dense, conv), the
fixed-point solvers, the gradient methods (implicit, unrolled), the linear operators and
norms they use, and the kGLM, naive and random initialisations."""

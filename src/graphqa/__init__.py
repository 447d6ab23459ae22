"""graphqa: GNN quality assessment of protein-complex models as a DVC pipeline."""

from graphqa.numerics import pin_cpu_numerics

# Before anything imports torch or numpy: their kernels are chosen once, at load time.
pin_cpu_numerics()

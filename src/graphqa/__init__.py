"""graphqa: GNN quality assessment of protein-complex models as a DVC pipeline."""

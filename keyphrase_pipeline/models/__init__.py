"""Neural networks, losses and export code (no artefacts: trained models live in the lake's registry)."""

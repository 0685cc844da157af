"""Data sets, one module per modality. Each depends on nothing but `layout`."""

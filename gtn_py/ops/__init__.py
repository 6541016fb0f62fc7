"""Graph algorithms, each written once against the semirings."""

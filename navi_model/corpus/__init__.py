"""The corpus: the intent catalog, the deterministic generator and the validating loader."""

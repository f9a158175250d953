"""DSA attention: one SGLang backend, implementations chosen per phase from a table."""

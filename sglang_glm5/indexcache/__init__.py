"""IndexCache: per-layer plans of which DSA layers run their own indexer ("F") and which reuse top-k ("S")."""

"""Catalog, dataset readers, embeddings, the Chroma index and the candidate generators."""

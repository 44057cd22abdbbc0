"""Catalog, dataset readers, embeddings, the Chroma index, the candidate generators and the online model that
learns across sessions."""

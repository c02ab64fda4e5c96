"""Atlas basics: the structure ontology, annotation volumes and the CCF coordinate space."""

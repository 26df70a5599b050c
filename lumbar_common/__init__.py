"""Domain vocabulary shared by the node, the workers and the imaging models.

Kept free of torch, networking and database imports so that every process may load it.
"""

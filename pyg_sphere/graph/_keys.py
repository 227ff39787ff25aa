"""Names of the attributes that :func:`~pyg_sphere.healpix_graph` stores on a graph."""

#: Graph-level parameters: what pooling needs to rebuild the coarser graph, and what
#: convolutions read (``lambda_max``).
GRAPH_PARAMS = ("nside", "nest", "num_neighbors", "kernel_width", "variant", "lambda_max")

#: Everything a batch or an item carries to stand for its graph.
GRAPH_KEYS = ("edge_index", "edge_weight", "pixels") + GRAPH_PARAMS

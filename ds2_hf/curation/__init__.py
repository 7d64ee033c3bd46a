"""DS2 score curation: k-NN, transition matrix (HOC), detection (SimiFeat), long-tail score."""

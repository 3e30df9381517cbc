"""Media plumbing (the only place PyAV is used): probe, decode, encode, join and mux."""

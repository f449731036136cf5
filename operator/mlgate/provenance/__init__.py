"""Model provenance adapters: content digests, unsafe-serialisation scans and OMS signatures."""

"""Registry adapter: verifies container image signatures in OCI registries for the engine.

The engine judges `ImageFact`s; this package produces them (I/O lives here, never in the engine):

- `client`: async OCI distribution client (manifests, referrers, blobs; digest-checked, size-
  and time-bounded; bearer/basic auth; HTTPS with optional CA bundle, HTTP only when insecure);
- `auth`: dockerconfigjson credentials and WWW-Authenticate challenges;
- `cosign`: cosign's classic (.sig, simple signing) and sigstore-bundle (DSSE) formats, verified
  with ECDSA, RSA and Ed25519/Ed25519ph public keys: pure functions;
- `keys`: trusted keys and pull credentials from policies and Secrets (short TTL);
- `verifier`: `Verifier`, the webhook's `ImageVerifier`, with caching and single-flight;
- `wiring`, `command`, `options`: `mlgate run`, `mlgate check --verify-images`,
  `mlgate verify-image`.
"""

"""WAIaaS shared core: Solana transaction decoding, policy documents and their evaluation.

Pure and I/O-free: both services (the enclave app and the parent proxy) import it; it imports neither.
"""

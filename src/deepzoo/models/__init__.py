"""Model families, one module each; every model follows the contract in ARCHITECTURE.md."""

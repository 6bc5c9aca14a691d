"""Model families, one module each; the registry lives in converters/architectures.py."""

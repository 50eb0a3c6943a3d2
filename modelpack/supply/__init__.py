"""The supply chain of a pushed image: the signed record, the SBOM, keys, signing and verification."""

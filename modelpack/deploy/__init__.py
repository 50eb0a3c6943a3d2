"""Where built images go next: Kubernetes manifests and GitHub Actions glue."""

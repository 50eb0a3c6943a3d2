"""Where built images go next: Kubernetes objects (Deployment, Service) and GitHub Actions glue."""

"""Argo CD: the health checks of manifests/argocd/health, run the way Argo CD runs them."""

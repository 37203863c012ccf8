"""The tools a platform team checks manifests with: helm, kubeconform, kube-score."""

"""Chain I/O: compiled artifacts, deployment, the deployment manifest, batched reads, orders."""

"""NVFlare's layer: the client script, the server controller, the job, filters, and the
watched simulator. The only place (with a deployment package) that imports NVFlare."""

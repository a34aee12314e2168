"""The HTTP front: Azure's REST API shape, the web portal and alert webhooks, on the SDK."""

"""Webhooks both ways: signed, durable, retried outbound deliveries and verified inbound receivers.

Mount with :func:`tidings.webhooks.service.attach_webhooks` (see docs/reference/webhooks.md).
"""

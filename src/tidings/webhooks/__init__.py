"""Webhooks both ways: signed, durable, retried outbound deliveries and verified inbound receivers.

Mount with :func:`tidings.webhooks.service.attach_webhooks` (see docs/reference/webhooks.md).
Sending to a provider's customers (applications, the event-type catalog, app messages and the
portal) is :mod:`tidings.webhooks.apps` over the same queue, with its routes in
:mod:`tidings.webhooks.apps_api` and its records in :mod:`tidings.webhooks.app_store`.
"""

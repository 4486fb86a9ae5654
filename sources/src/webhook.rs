//! WebhookSource: inbound HTTP POSTs turned into CloudEvents.

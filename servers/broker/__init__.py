"""The message broker: messages, threads, broadcast, long-poll, leases, reminders, helper events."""

"""DynamoDB repositories, secrets, the event bus and the audit trail: all state access lives here."""

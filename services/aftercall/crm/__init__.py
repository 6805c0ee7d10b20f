"""The CRM push: approved (or drafted) summaries sent to the site's systems as signed webhooks from a durable outbox."""

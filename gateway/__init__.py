"""igw gateway: Meta's signed webhooks, verified, normalized and published to Kafka."""

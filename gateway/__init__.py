"""igw gateway: Meta's signed webhooks, verified, normalized and published to Kafka."""

__version__ = "0.1.0"

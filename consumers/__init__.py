"""igw's Kafka consumers: agent replies and analytics."""

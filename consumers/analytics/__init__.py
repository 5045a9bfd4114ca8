"""The analytics consumer: business metrics from every igw topic, counted once, by event time."""

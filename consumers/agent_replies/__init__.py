"""The agent-replies consumer (``igw agent``): answers inbound messages through the Send API."""

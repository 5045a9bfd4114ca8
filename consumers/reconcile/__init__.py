"""Reconcile: recover the inbound messages Meta never delivered as webhooks, and watch the subscription."""

"""Async invocations after the door: the queue's dispatchers (`dispatch`), one attempt and
its retry or dead letter (`attempt`), and the callbacks and destinations of a finished
invocation (`notify`)."""

from kubefaas_gateway.delivery.dispatch import AsyncDelivery

__all__ = ["AsyncDelivery"]

"""basicsync consumer: Kafka job events in, WorkfloPlus basicSync requests out."""

__version__ = "0.1.0"

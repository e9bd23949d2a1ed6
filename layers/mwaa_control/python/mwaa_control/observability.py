"""The one place that creates the Powertools logger, tracer and metrics."""

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "mwaa-control"
METRICS_NAMESPACE = "MwaaControl"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=METRICS_NAMESPACE)

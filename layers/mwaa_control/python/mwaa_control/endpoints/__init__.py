"""Customer-managed VPC endpoints of shared-VPC environments: the service, the SQS endpoint policy
statement, and the EC2 and registry adapters it drives."""

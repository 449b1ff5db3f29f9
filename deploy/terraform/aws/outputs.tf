output "role_arn" {
  description = "Helm value serviceAccount.awsRoleArn."
  value       = aws_iam_role.replicator.arn
}

output "queue_url" {
  description = "queue delivery: the daemon's [[sqs]] queue_url."
  value       = local.queue ? aws_sqs_queue.events[0].url : null
}

output "service_account_email" {
  description = "Helm value serviceAccount.gcpServiceAccount."
  value       = google_service_account.replicator.email
}

output "subscription" {
  description = "queue delivery: the pull subscription the daemon reads."
  value       = local.queue ? google_pubsub_subscription.events.id : null
}

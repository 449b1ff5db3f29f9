output "client_id" {
  description = "Helm value serviceAccount.azureClientId."
  value       = azurerm_user_assigned_identity.replicator.client_id
}

output "queue" {
  description = "queue delivery: the Storage Queue the daemon reads."
  value       = local.queue ? azurerm_storage_queue.events[0].name : null
}

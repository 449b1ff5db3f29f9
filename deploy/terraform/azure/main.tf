# Event Grid blob notifications for replicator, and the managed identity its pods use
# (Azure Workload Identity).

data "azurerm_storage_account" "source" {
  name                = var.source_account
  resource_group_name = var.resource_group
}

data "azurerm_storage_account" "destination" {
  count               = var.destination_account == "" ? 0 : 1
  name                = var.destination_account
  resource_group_name = var.resource_group
}

locals {
  queue            = var.delivery == "queue"
  subject_prefix   = "/blobServices/default/containers/${var.source_container}/blobs/"
  source_scope     = "${data.azurerm_storage_account.source.id}/blobServices/default/containers/${var.source_container}"
  destination_path = "/blobServices/default/containers/${var.destination_container}"
}

resource "azurerm_eventgrid_system_topic" "source" {
  name                   = "replicator-${var.source_account}"
  resource_group_name    = var.resource_group
  location               = var.location
  source_arm_resource_id = data.azurerm_storage_account.source.id
  topic_type             = "Microsoft.Storage.StorageAccounts"
}

# -- queue: Event Grid -> Storage Queue (in the source account: nothing public to expose) --

resource "azurerm_storage_queue" "events" {
  count                = local.queue ? 1 : 0
  name                 = "replicator-events"
  storage_account_name = data.azurerm_storage_account.source.name
}

resource "azurerm_eventgrid_system_topic_event_subscription" "to_queue" {
  count                = local.queue ? 1 : 0
  name                 = "replicator-queue"
  system_topic         = azurerm_eventgrid_system_topic.source.name
  resource_group_name  = var.resource_group
  included_event_types = ["Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted"]
  subject_filter {
    subject_begins_with = local.subject_prefix
  }
  storage_queue_endpoint {
    storage_account_id = data.azurerm_storage_account.source.id
    queue_name         = azurerm_storage_queue.events[0].name
    # Seven days, the most a queue message may live.
    queue_message_time_to_live_in_seconds = 604800
  }
  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }
}

# -- push: Event Grid -> webhook ---------------------------------------------------------

# The daemon answers the SubscriptionValidation handshake itself at /ingest/azure.
resource "azurerm_eventgrid_system_topic_event_subscription" "to_webhook" {
  count                = local.queue ? 0 : 1
  name                 = "replicator-webhook"
  system_topic         = azurerm_eventgrid_system_topic.source.name
  resource_group_name  = var.resource_group
  included_event_types = ["Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted"]
  subject_filter {
    subject_begins_with = local.subject_prefix
  }
  webhook_endpoint {
    url = var.ingest_url
  }
  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }
}

# -- the daemon's identity -----------------------------------------------------------------

resource "azurerm_user_assigned_identity" "replicator" {
  name                = "replicator"
  resource_group_name = var.resource_group
  location            = var.location
}

resource "azurerm_federated_identity_credential" "workload" {
  name                = "replicator-aks"
  resource_group_name = var.resource_group
  parent_id           = azurerm_user_assigned_identity.replicator.id
  issuer              = var.oidc_issuer_url
  subject             = "system:serviceaccount:${replace(var.service_account, "/", ":")}"
  audience            = ["api://AzureADTokenExchange"]
}

resource "azurerm_role_assignment" "read_source" {
  scope                = local.source_scope
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.replicator.principal_id
}

resource "azurerm_role_assignment" "consume_queue" {
  count                = local.queue ? 1 : 0
  scope                = "${data.azurerm_storage_account.source.id}/queueServices/default/queues/${azurerm_storage_queue.events[0].name}"
  role_definition_name = "Storage Queue Data Message Processor"
  principal_id         = azurerm_user_assigned_identity.replicator.principal_id
}

# Storage Blob Data Contributor would also allow deletes: a custom role leaves them out
# unless the routes may delete.
resource "azurerm_role_definition" "writer" {
  count       = var.destination_account == "" ? 0 : 1
  name        = "replicator destination writer"
  scope       = data.azurerm_storage_account.destination[0].id
  description = "Write, stage and commit blocks, read and list replicas; delete only when allowed."
  permissions {
    data_actions = concat(
      [
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
      ],
      var.allow_deletes ? ["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete"] : [],
    )
  }
  assignable_scopes = [data.azurerm_storage_account.destination[0].id]
}

resource "azurerm_role_assignment" "write_destination" {
  count              = var.destination_account == "" ? 0 : 1
  scope              = "${data.azurerm_storage_account.destination[0].id}${local.destination_path}"
  role_definition_id = azurerm_role_definition.writer[0].role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.replicator.principal_id
}

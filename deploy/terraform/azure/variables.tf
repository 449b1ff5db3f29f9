variable "resource_group" {
  description = "The resource group of the storage accounts."
  type        = string
}

variable "location" {
  description = "Azure region of the new resources."
  type        = string
}

variable "source_account" {
  description = "The storage account whose blob changes are replicated (must exist)."
  type        = string
}

variable "source_container" {
  description = "The container whose blob changes are replicated."
  type        = string
}

variable "destination_account" {
  description = "A storage account replicator writes replicas to (empty: none on Azure)."
  type        = string
  default     = ""
}

variable "destination_container" {
  description = "The container in destination_account replicas go to."
  type        = string
  default     = ""
}

variable "allow_deletes" {
  description = "Let the daemon delete replicas: true when a route's delete_policy is not never."
  type        = bool
  default     = false
}

variable "delivery" {
  description = "queue: Event Grid -> Storage Queue read by the daemon; push: Event Grid -> webhook ingest."
  type        = string
  default     = "queue"
  validation {
    condition     = contains(["queue", "push"], var.delivery)
    error_message = "delivery must be queue or push."
  }
}

variable "ingest_url" {
  description = "push only: https://HOST/ingest/azure?token=TOKEN (the daemon's ingest listener)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "oidc_issuer_url" {
  description = "The AKS cluster's OIDC issuer URL (Azure Workload Identity)."
  type        = string
}

variable "service_account" {
  description = "namespace/name of the daemon's Kubernetes ServiceAccount."
  type        = string
  default     = "replicator/replicator"
}

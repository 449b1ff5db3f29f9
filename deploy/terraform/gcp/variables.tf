variable "project" {
  description = "The project holding the buckets and the Pub/Sub topic."
  type        = string
}

variable "source_bucket" {
  description = "The bucket whose changes are replicated (must exist)."
  type        = string
}

variable "source_prefix" {
  description = "Only object names under this prefix are notified (empty: the whole bucket)."
  type        = string
  default     = ""
}

variable "destination_bucket" {
  description = "A GCS bucket replicator writes replicas to (empty: none on GCS)."
  type        = string
  default     = ""
}

variable "delivery" {
  description = "queue: a pull subscription the daemon reads; push: a push subscription to the ingest listener."
  type        = string
  default     = "queue"
  validation {
    condition     = contains(["queue", "push"], var.delivery)
    error_message = "delivery must be queue or push."
  }
}

variable "ingest_url" {
  description = "push only: https://HOST/ingest/gcs?token=TOKEN (the daemon's ingest listener)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "kms_key" {
  description = "Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) encrypting the topic."
  type        = string
}

variable "service_account" {
  description = "namespace/name of the daemon's Kubernetes ServiceAccount (GKE Workload Identity)."
  type        = string
  default     = "replicator/replicator"
}

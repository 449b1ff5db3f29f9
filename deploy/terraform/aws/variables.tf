variable "source_bucket" {
  description = "The bucket whose changes are replicated (must exist)."
  type        = string
}

variable "source_prefix" {
  description = "Only keys under this prefix are notified (empty: the whole bucket)."
  type        = string
  default     = ""
}

variable "destination_bucket" {
  description = "An S3 bucket replicator writes replicas to (empty: none on S3)."
  type        = string
  default     = ""
}

variable "allow_deletes" {
  description = "Let the daemon delete replicas: true when a route's delete_policy is not never."
  type        = bool
  default     = false
}

variable "delivery" {
  description = "queue: S3 -> SQS, polled by the daemon; push: S3 -> SNS -> HTTPS ingest."
  type        = string
  default     = "queue"
  validation {
    condition     = contains(["queue", "push"], var.delivery)
    error_message = "delivery must be queue or push."
  }
}

variable "ingest_url" {
  description = "push only: https://HOST/ingest/s3?token=TOKEN (the daemon's ingest listener)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "oidc_provider_arn" {
  description = "The EKS cluster's IAM OIDC provider, for IRSA."
  type        = string
}

variable "oidc_provider_url" {
  description = "The EKS cluster's OIDC issuer without https:// (oidc.eks.REGION.amazonaws.com/id/ID)."
  type        = string
}

variable "service_account" {
  description = "namespace/name of the daemon's Kubernetes ServiceAccount."
  type        = string
  default     = "replicator/replicator"
}

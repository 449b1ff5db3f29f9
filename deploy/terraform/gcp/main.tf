# GCS notifications to Pub/Sub for replicator, and the Google service account its pods use
# (GKE Workload Identity).

data "google_storage_project_service_account" "gcs" {
  project = var.project
}

locals {
  queue  = var.delivery == "queue"
  filter = var.source_prefix == "" ? "" : "hasPrefix(attributes.objectId, \"${var.source_prefix}\")"
}

resource "google_pubsub_topic" "events" {
  project      = var.project
  name         = "replicator-${var.source_bucket}"
  kms_key_name = var.kms_key
}

# Only the bucket's own service agent may publish.
resource "google_pubsub_topic_iam_member" "gcs_publishes" {
  project = var.project
  topic   = google_pubsub_topic.events.id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_notification" "events" {
  bucket             = var.source_bucket
  payload_format     = "JSON_API_V1"
  topic              = google_pubsub_topic.events.id
  event_types        = ["OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_METADATA_UPDATE"]
  object_name_prefix = var.source_prefix == "" ? null : var.source_prefix
  depends_on         = [google_pubsub_topic_iam_member.gcs_publishes]
}

resource "google_pubsub_topic" "dead_letters" {
  project      = var.project
  name         = "replicator-${var.source_bucket}-dead-letters"
  kms_key_name = var.kms_key
}

resource "google_pubsub_subscription" "events" {
  project = var.project
  name    = "replicator-${var.source_bucket}"
  topic   = google_pubsub_topic.events.id
  # Longer than the daemon takes to publish a message to Kafka and acknowledge it.
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  filter                     = local.filter
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letters.id
    max_delivery_attempts = 10
  }
  retry_policy {
    minimum_backoff = "1s"
    maximum_backoff = "60s"
  }
  dynamic "push_config" {
    for_each = local.queue ? [] : [1]
    content {
      push_endpoint = var.ingest_url
    }
  }
}

# -- the daemon's identity -----------------------------------------------------------------

resource "google_service_account" "replicator" {
  project      = var.project
  account_id   = "replicator"
  display_name = "replicator daemon"
}

resource "google_service_account_iam_member" "workload_identity" {
  service_account_id = google_service_account.replicator.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.service_account}]"
}

resource "google_storage_bucket_iam_member" "read_source" {
  bucket = var.source_bucket
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.replicator.email}"
}

# On GCS, replacing an object (a replica rewritten when its source changes) and removing the
# temporary part objects of a parallel upload after compose both need storage.objects.delete:
# IAM cannot withhold deletes from the daemon here, its routes' delete_policy does.
resource "google_project_iam_custom_role" "writer" {
  count       = var.destination_bucket == "" ? 0 : 1
  project     = var.project
  role_id     = "replicatorWriter"
  title       = "replicator destination writer"
  description = "Write, compose, list and replace replicas."
  permissions = [
    "storage.objects.create",
    "storage.objects.get",
    "storage.objects.list",
    "storage.objects.delete",
  ]
}

resource "google_storage_bucket_iam_member" "write_destination" {
  count  = var.destination_bucket == "" ? 0 : 1
  bucket = var.destination_bucket
  role   = google_project_iam_custom_role.writer[0].id
  member = "serviceAccount:${google_service_account.replicator.email}"
}

resource "google_pubsub_subscription_iam_member" "consume" {
  count        = local.queue ? 1 : 0
  project      = var.project
  subscription = google_pubsub_subscription.events.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.replicator.email}"
}

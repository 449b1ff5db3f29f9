# Bucket notifications for replicator, and the IAM role its pods assume (IRSA).

data "aws_s3_bucket" "source" {
  bucket = var.source_bucket
}

data "aws_caller_identity" "current" {}

locals {
  queue  = var.delivery == "queue"
  events = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
  sa     = split("/", var.service_account)
}

# Encrypts the queue and the topic; S3 must be allowed to use it to publish.
resource "aws_kms_key" "notifications" {
  description         = "replicator bucket notifications"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.key.json
}

# In a key policy "*" is the key itself, and the account statement is AWS's default key policy
# (it delegates to IAM policies): not the wildcards these checks look for.
data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_111:key policy; its resource "*" is this key alone
  #checkov:skip=CKV_AWS_356:key policy; its resource "*" is this key alone
  #checkov:skip=CKV_AWS_109:key policy; the account statement is AWS's default one
  statement {
    sid       = "Account"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "S3Publishes"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [data.aws_s3_bucket.source.arn]
    }
  }
}

# -- queue: S3 -> SQS --------------------------------------------------------------------

resource "aws_sqs_queue" "dead_letters" {
  count                     = local.queue ? 1 : 0
  name                      = "replicator-${var.source_bucket}-dlq"
  message_retention_seconds = 1209600
  kms_master_key_id         = aws_kms_key.notifications.arn
}

resource "aws_sqs_queue" "events" {
  count = local.queue ? 1 : 0
  name  = "replicator-${var.source_bucket}"
  # Longer than the daemon takes to publish a batch to Kafka and delete it.
  visibility_timeout_seconds = 120
  message_retention_seconds  = 1209600
  receive_wait_time_seconds  = 20
  kms_master_key_id          = aws_kms_key.notifications.arn
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letters[0].arn
    maxReceiveCount     = 10
  })
}

resource "aws_sqs_queue_policy" "events" {
  count     = local.queue ? 1 : 0
  queue_url = aws_sqs_queue.events[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "SourceBucketSends"
      Effect    = "Allow"
      Principal = { Service = "s3.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = aws_sqs_queue.events[0].arn
      Condition = {
        ArnEquals    = { "aws:SourceArn" = data.aws_s3_bucket.source.arn }
        StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id }
      }
    }]
  })
}

resource "aws_s3_bucket_notification" "to_queue" {
  count  = local.queue ? 1 : 0
  bucket = data.aws_s3_bucket.source.id
  queue {
    queue_arn     = aws_sqs_queue.events[0].arn
    events        = local.events
    filter_prefix = var.source_prefix
  }
  depends_on = [aws_sqs_queue_policy.events]
}

# -- push: S3 -> SNS -> HTTPS ------------------------------------------------------------

resource "aws_sns_topic" "events" {
  count             = local.queue ? 0 : 1
  name              = "replicator-${var.source_bucket}"
  kms_master_key_id = aws_kms_key.notifications.arn
}

resource "aws_sns_topic_policy" "events" {
  count = local.queue ? 0 : 1
  arn   = aws_sns_topic.events[0].arn
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "SourceBucketPublishes"
      Effect    = "Allow"
      Principal = { Service = "s3.amazonaws.com" }
      Action    = "sns:Publish"
      Resource  = aws_sns_topic.events[0].arn
      Condition = {
        ArnEquals    = { "aws:SourceArn" = data.aws_s3_bucket.source.arn }
        StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id }
      }
    }]
  })
}

# The daemon confirms the subscription itself (SubscriptionConfirmation to /ingest/s3).
resource "aws_sns_topic_subscription" "ingest" {
  count                  = local.queue ? 0 : 1
  topic_arn              = aws_sns_topic.events[0].arn
  protocol               = "https"
  endpoint               = var.ingest_url
  endpoint_auto_confirms = true
  raw_message_delivery   = false
}

resource "aws_s3_bucket_notification" "to_topic" {
  count  = local.queue ? 0 : 1
  bucket = data.aws_s3_bucket.source.id
  topic {
    topic_arn     = aws_sns_topic.events[0].arn
    events        = local.events
    filter_prefix = var.source_prefix
  }
  depends_on = [aws_sns_topic_policy.events]
}

# -- the daemon's role (IRSA) -------------------------------------------------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:sub"
      values   = ["system:serviceaccount:${local.sa[0]}:${local.sa[1]}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "replicator" {
  name               = "replicator-${var.source_bucket}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "replicator" {
  statement {
    sid       = "ListSource"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = [data.aws_s3_bucket.source.arn]
  }
  statement {
    sid       = "ReadSource"
    actions   = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes"]
    resources = ["${data.aws_s3_bucket.source.arn}/${var.source_prefix}*"]
  }
  statement {
    sid       = "UseNotificationKey"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.notifications.arn]
  }
  dynamic "statement" {
    for_each = local.queue ? [1] : []
    content {
      sid       = "ConsumeQueue"
      actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
      resources = [aws_sqs_queue.events[0].arn]
    }
  }
  dynamic "statement" {
    for_each = var.destination_bucket == "" ? [] : [1]
    content {
      sid       = "ListDestination"
      actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
      resources = ["arn:aws:s3:::${var.destination_bucket}"]
    }
  }
  dynamic "statement" {
    for_each = var.destination_bucket == "" ? [] : [1]
    content {
      sid = "WriteDestination"
      # s3:PutObject also covers CreateMultipartUpload, UploadPart(Copy) and Complete.
      actions = concat(
        ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
        var.allow_deletes ? ["s3:DeleteObject"] : [],
      )
      resources = ["arn:aws:s3:::${var.destination_bucket}/*"]
    }
  }
}

resource "aws_iam_role_policy" "replicator" {
  name   = "replicator"
  role   = aws_iam_role.replicator.id
  policy = data.aws_iam_policy_document.replicator.json
}

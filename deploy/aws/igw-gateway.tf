# What an existing ECS (Fargate) setup needs to run the igw gateway: the two Meta secrets in
# Secrets Manager, an execution role that may read them, the task definition, and a service
# behind your ALB. Secret values are never in Terraform: create the secrets here, then put the
# values in with the console or `aws secretsmanager put-secret-value` (kept out of state).
#
# Inputs are your existing cluster, subnets, security group, ALB listener and image.

variable "cluster_arn" { type = string }
variable "subnet_ids" { type = list(string) }
variable "security_group_ids" { type = list(string) }
variable "vpc_id" { type = string }
variable "https_listener_arn" { type = string }
variable "image" { type = string } # e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/igw:0.1.0
variable "kafka_bootstrap_servers" { type = string }
variable "aws_region" { type = string }

resource "aws_secretsmanager_secret" "verify_token" {
  name        = "igw/instagram-webhook-verify-token"
  description = "The verify token typed in Meta's App Dashboard (INSTAGRAM_WEBHOOK_VERIFY_TOKEN)"
}

resource "aws_secretsmanager_secret" "app_secret" {
  name        = "igw/instagram-app-secret"
  description = "Meta app secret(s), comma-separated while rotating (INSTAGRAM_APP_SECRET)"
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "gateway_execution" {
  name               = "igw-gateway-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "gateway_execution_base" {
  role       = aws_iam_role.gateway_execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# ECS reads the secrets when it starts a task and hands them to the container as variables.
data "aws_iam_policy_document" "read_igw_secrets" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.verify_token.arn, aws_secretsmanager_secret.app_secret.arn]
  }
}

resource "aws_iam_role_policy" "gateway_execution_secrets" {
  name   = "read-igw-secrets"
  role   = aws_iam_role.gateway_execution.id
  policy = data.aws_iam_policy_document.read_igw_secrets.json
}

resource "aws_cloudwatch_log_group" "gateway" {
  name              = "/ecs/igw-gateway"
  retention_in_days = 30
}

resource "aws_ecs_task_definition" "gateway" {
  family                   = "igw-gateway"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "512"
  memory                   = "1024"
  execution_role_arn       = aws_iam_role.gateway_execution.arn

  container_definitions = jsonencode([
    {
      name         = "gateway"
      image        = var.image
      essential    = true
      command      = ["igw", "gateway", "--host", "0.0.0.0", "--port", "8080"]
      portMappings = [{ containerPort = 8080, protocol = "tcp" }]
      environment = [
        { name = "KAFKA_BOOTSTRAP_SERVERS", value = var.kafka_bootstrap_servers },
        { name = "IGW_TOPIC_PREFIX", value = "ig" },
        { name = "IGW_SHUTDOWN_TIMEOUT_SECONDS", value = "20" },
        { name = "IGW_LOG_FORMAT", value = "json" },
      ]
      # valueFrom: ECS fetches the values at start; they are never in the task definition.
      secrets = [
        { name = "INSTAGRAM_WEBHOOK_VERIFY_TOKEN", valueFrom = aws_secretsmanager_secret.verify_token.arn },
        { name = "INSTAGRAM_APP_SECRET", valueFrom = aws_secretsmanager_secret.app_secret.arn },
      ]
      healthCheck = {
        command     = ["CMD", "python", "-m", "igw_tools.healthcheck", "http://127.0.0.1:8080/healthz"]
        interval    = 15
        timeout     = 3
        retries     = 3
        startPeriod = 20
      }
      # Above IGW_SHUTDOWN_TIMEOUT_SECONDS (20 s), so in-flight webhooks are drained and flushed.
      stopTimeout            = 30
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      # Task storage. The spool's path is the image's VOLUME: Fargate copies the image's directory
      # (owner 10001) there. /tmp stays root-owned; the gateway writes nothing to it (deploy/README.md).
      mountPoints = [
        { sourceVolume = "tmp", containerPath = "/tmp" },
        { sourceVolume = "spool", containerPath = "/var/lib/igw/spool" },
      ]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.gateway.name
          awslogs-region        = var.aws_region
          awslogs-stream-prefix = "gateway"
        }
      }
    }
  ])

  volume {
    name = "tmp"
  }
  volume {
    name = "spool"
  }
}

resource "aws_lb_target_group" "gateway" {
  name        = "igw-gateway"
  port        = 8080
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  # /healthz, not /readyz: ECS replaces a task its load balancer calls unhealthy, so this check
  # is a liveness check. During a Kafka outage the gateway keeps answering (from its spool, or 503
  # so Meta retries); replacing every task then would only add restarts to the outage.
  health_check {
    path                = "/healthz"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
  deregistration_delay = 25
}

resource "aws_lb_listener_rule" "gateway" {
  listener_arn = var.https_listener_arn
  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }
  condition {
    path_pattern { values = ["/api/v1/instagram/webhook"] }
  }
}

resource "aws_ecs_service" "gateway" {
  name            = "igw-gateway"
  cluster         = var.cluster_arn
  task_definition = aws_ecs_task_definition.gateway.arn
  desired_count   = 2
  launch_type     = "FARGATE"
  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = false
  }
  load_balancer {
    target_group_arn = aws_lb_target_group.gateway.arn
    container_name   = "gateway"
    container_port   = 8080
  }
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
}

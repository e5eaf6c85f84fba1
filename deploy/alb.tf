# AWS Application Load Balancer in front of WebSocket nodes running
# tower-sticky-upgrade, with application-cookie stickiness on the cookie the
# layer sets on the `101 Switching Protocols` response.
#
# How it fits together:
# - The node sets WS_SESSION_ID on the 101. ALB `app_cookie` stickiness sees it
#   and adds its own AWSALBAPP-* cookie (encrypted, naming the target); the
#   client sends both back and ALB routes the reconnect to the same target.
#   Browsers do this on their own; other clients must keep every cookie.
# - On deploy the node gets SIGTERM, its /ws-health turns 503 and it refuses
#   new upgrades with 503 + Retry-After, then (after --close-delay) closes
#   its sockets with 1001 over the close spread. ALB stops routing to it
#   (deregistration, or the failing health check) and its clients reconnect
#   to a healthy target, which reports affinity "migrated" with the same
#   session id.
#
# The `app_*` variables restate the nodes' own flags (`--drain-timeout`,
# `--close-delay`, `--close-spread`, `--retry-after`, `--ping-interval`) so that the timing
# rules of deploy/README.md are checked at plan time. They have no defaults on
# purpose: checks of values nobody runs would pass for nothing.
#
# Usage: terraform init && terraform apply -var vpc_id=… -var 'subnet_ids=[…]'
#        -var certificate_arn=… -var 'target_ids=[…]'
#        -var app_drain_timeout=25 -var app_close_delay=0 -var app_close_spread=10
#        -var app_retry_after=10 -var app_ping_interval=25   (your nodes' flags)
# Register targets here (target_ids) or from an Auto Scaling group / ECS
# service with the `target_group_arn` output. The nodes must listen on an
# address ALB reaches (`--listen 0.0.0.0:3000`, not the examples' default
# 127.0.0.1), and their security group must let the load balancer's in:
# pass it as target_security_group_id, or open it yourself.
#
# Who goes first matters (deploy/README.md, "Who sends SIGTERM, and when"):
# on ECS, and whenever targets are deregistered before the process is told to
# stop, ALB cuts the open WebSockets at the end of deregistration_delay, before
# the node gets SIGTERM, unless something starts the drain when deregistration
# starts.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "name" {
  description = "Name prefix for the load balancer, target group and security group."
  type        = string
  default     = "ws"
}

variable "vpc_id" {
  description = "VPC of the load balancer and the targets."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets for the load balancer (at least two availability zones)."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate for the HTTPS listener (the cookie is Secure by default)."
  type        = string
}

variable "allowed_cidrs" {
  description = "Client networks allowed to reach the load balancer."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "app_port" {
  description = "Port the nodes listen on (`--listen 0.0.0.0:PORT`)."
  type        = number
  default     = 3000
}

variable "target_type" {
  description = "\"instance\" (EC2) or \"ip\" (ECS awsvpc, EKS)."
  type        = string
  default     = "instance"
}

variable "target_security_group_id" {
  description = "Security group of the targets (instances or ECS tasks), opened here to the load balancer on app_port with a separate rule. Null: open it yourself. If that group is managed elsewhere with inline ingress blocks, that configuration removes this rule on its next apply: add the rule there instead."
  type        = string
  default     = null
}

variable "target_ids" {
  description = "Targets to register (instance ids or IPs). Leave empty when an ASG or ECS registers them."
  type        = list(string)
  default     = []
}

variable "cookie_name" {
  description = "The affinity cookie the nodes set (`--cookie-name`, `.cookie_name(..)`)."
  type        = string
  default     = "WS_SESSION_ID"

  validation {
    # ALB reserves these prefixes for its own cookies.
    condition     = !can(regex("^(?i)AWSALB", var.cookie_name))
    error_message = "cookie_name must not start with AWSALB, AWSALBAPP or AWSALBTG: ALB reserves them."
  }
}

variable "cookie_duration" {
  # ALB checks this window on each request and renews it on each response.
  # A WebSocket makes one request, its upgrade, and frames renew nothing, so
  # a client that reconnects after longer than this is routed afresh, however
  # long its socket was open. Hence the maximum by default; AWSALBAPP itself
  # expires after 7 days whatever this says.
  description = "How long ALB keeps a client on its target after its last request through ALB (for a WebSocket, its upgrade), in seconds (1 to 604800): cover the longest socket lifetime plus the time a client may stay away."
  type        = number
  default     = 604800

  validation {
    condition     = var.cookie_duration >= 1 && var.cookie_duration <= 604800
    error_message = "cookie_duration must be between 1 second and 7 days (604800)."
  }
}

variable "deregistration_delay" {
  description = "Seconds ALB waits for a deregistering target's connections before cutting them (0 to 3600). Must exceed the nodes' drain timeout, counted from when the drain starts."
  type        = number
  default     = 60

  validation {
    condition     = var.deregistration_delay >= 0 && var.deregistration_delay <= 3600
    error_message = "deregistration_delay must be between 0 and 3600 seconds."
  }
}

variable "idle_timeout" {
  description = "Seconds a connection (WebSockets included) may stay silent before ALB closes it (1 to 4000). Keep it above the ping interval."
  type        = number
  default     = 120

  validation {
    condition     = var.idle_timeout >= 1 && var.idle_timeout <= 4000
    error_message = "idle_timeout must be between 1 and 4000 seconds."
  }
}

variable "health_check_interval" {
  description = "Seconds between health checks of /ws-health (5 to 300)."
  type        = number
  default     = 5
  validation {
    condition     = var.health_check_interval >= 5 && var.health_check_interval <= 300
    error_message = "health_check_interval must be between 5 and 300 seconds."
  }
}

variable "unhealthy_threshold" {
  description = "Failed checks before a target is taken out (2 to 10)."
  type        = number
  default     = 2
  validation {
    condition     = var.unhealthy_threshold >= 2 && var.unhealthy_threshold <= 10
    error_message = "unhealthy_threshold must be between 2 and 10."
  }
}

variable "app_drain_timeout" {
  description = "The nodes' `--drain-timeout`, in seconds."
  type        = number
}

variable "app_close_delay" {
  description = "The nodes' `--close-delay`, in seconds: 0 when the drain starts once ALB has stopped routing new connections to the node (it started on deregistration), else about health_check_interval × unhealthy_threshold."
  type        = number
}

variable "app_close_spread" {
  description = "The nodes' `--close-spread`, in seconds."
  type        = number
}

variable "app_retry_after" {
  description = "The nodes' `--retry-after`, in seconds."
  type        = number
}

variable "app_ping_interval" {
  description = "The nodes' (or clients') WebSocket ping interval in seconds; 0 if none."
  type        = number
}

resource "aws_security_group" "lb" {
  name_prefix = "${var.name}-lb-"
  description = "WebSocket load balancer"
  vpc_id      = var.vpc_id

  ingress {
    description = "HTTPS and WSS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = var.allowed_cidrs
  }

  ingress {
    description = "HTTP, redirected to HTTPS"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = var.allowed_cidrs
  }

  egress {
    description = "To the targets and their health checks"
    from_port   = var.app_port
    to_port     = var.app_port
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

# The nodes' own security group must let the load balancer in, for requests
# and health checks alike.
resource "aws_vpc_security_group_ingress_rule" "targets_from_lb" {
  count                        = var.target_security_group_id == null ? 0 : 1
  security_group_id            = var.target_security_group_id
  description                  = "WebSockets and health checks from the load balancer"
  referenced_security_group_id = aws_security_group.lb.id
  from_port                    = var.app_port
  to_port                      = var.app_port
  ip_protocol                  = "tcp"
}

resource "aws_lb" "ws" {
  name               = var.name
  load_balancer_type = "application"
  internal           = false
  security_groups    = [aws_security_group.lb.id]
  subnets            = var.subnet_ids

  # Upgraded connections count as idle when no frame passes in either
  # direction; the nodes or clients must ping more often than this.
  idle_timeout               = var.idle_timeout
  drop_invalid_header_fields = true
}

resource "aws_lb_target_group" "ws" {
  # A prefix, not a fixed name: a change of port or target type replaces the
  # group, and with create_before_destroy (below) the new one must exist
  # while the listener still uses the old. A replacement is not seamless: the
  # new group starts with only the target_ids registered here (move an ASG or
  # ECS service to the new target_group_arn in the same change, or the
  # listener forwards to an empty group), and its stickiness starts afresh,
  # so each client is routed anew once (and the layer says "migrated").
  name_prefix      = substr(var.name, 0, 6)
  port             = var.app_port
  protocol         = "HTTP"
  protocol_version = "HTTP1"
  target_type      = var.target_type
  vpc_id           = var.vpc_id

  # While a target deregisters, ALB sends it no new requests but keeps its
  # open WebSockets for this long; the node drains them itself well before.
  deregistration_delay = var.deregistration_delay

  stickiness {
    enabled         = true
    type            = "app_cookie"
    cookie_name     = var.cookie_name
    cookie_duration = var.cookie_duration
  }

  health_check {
    enabled             = true
    protocol            = "HTTP"
    path                = "/ws-health"
    matcher             = "200"
    interval            = var.health_check_interval
    timeout             = 2
    healthy_threshold   = 2
    unhealthy_threshold = var.unhealthy_threshold
  }

  lifecycle {
    create_before_destroy = true

    # The timing rules of deploy/README.md, checked against the nodes' flags.
    # The examples stop plain HTTP for up to 2 s after the drain, and give a
    # client 5 s to answer its close frame.
    precondition {
      condition     = var.app_drain_timeout + 2 < var.deregistration_delay
      error_message = "app_drain_timeout + 2 s must be below deregistration_delay, or ALB cuts connections the node is still closing."
    }
    precondition {
      condition     = var.app_close_delay + var.app_close_spread + 5 < var.app_drain_timeout
      error_message = "app_close_delay + app_close_spread + 5 s (a close handshake) must be below app_drain_timeout, or the last sockets are cut instead of closed with 1001."
    }
    precondition {
      condition     = var.app_ping_interval == 0 || var.app_ping_interval < var.idle_timeout
      error_message = "app_ping_interval must be below idle_timeout, or ALB closes quiet WebSockets."
    }
  }
}

# A recommendation rather than a rule: reported as a warning at plan time.
check "quiet_sockets_are_pinged" {
  assert {
    condition     = var.app_ping_interval > 0
    error_message = "app_ping_interval is 0: unless the clients ping, ALB closes WebSockets that stay quiet for idle_timeout seconds."
  }
}

check "targets_reachable" {
  assert {
    condition     = var.target_security_group_id != null
    error_message = "target_security_group_id is not set: open the targets' security group to the load balancer's (output lb_security_group_id) on app_port yourself, or every health check fails."
  }
}

check "retry_after_covers_health_check" {
  assert {
    condition     = var.app_retry_after >= var.health_check_interval * var.unhealthy_threshold
    error_message = "app_retry_after is below health_check_interval × unhealthy_threshold: clients refused with 503 may retry before ALB has taken the draining node out."
  }
}

resource "aws_lb_target_group_attachment" "ws" {
  for_each         = toset(var.target_ids)
  target_group_arn = aws_lb_target_group.ws.arn
  target_id        = each.value
  port             = var.app_port

  # Registered in a replacement group before they leave the old one.
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.ws.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.ws.arn
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.ws.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }
}

output "dns_name" {
  description = "Point your DNS name (matching the certificate) here."
  value       = aws_lb.ws.dns_name
}

output "ws_url" {
  description = "WebSocket URL through the load balancer (use your certificate's host name)."
  value       = "wss://${aws_lb.ws.dns_name}/ws"
}

output "target_group_arn" {
  description = "For Auto Scaling groups or ECS services that register the targets."
  value       = aws_lb_target_group.ws.arn
}

output "lb_security_group_id" {
  description = "The load balancer's security group: the targets must accept app_port from it."
  value       = aws_security_group.lb.id
}

"""The validator's services: sidecar, managing, synthesizing, scoring, orchestrator, gateway, weights."""

"""The locust-telemetry extending guide's example project, ported to swarmtel."""

from swarmtel_recorder import Environment
from swarmtel_recorder import BaseTelemetryRecorder
from swarmtel_recorder import TelemetryData

class CustomTelemetryRecorder(BaseTelemetryRecorder):
    name = "custom_telemetry_recorder"

    def __init__(self, env: Environment):
        super().__init__(env)
        # Register event listeners
        env.events.test_start.add_listener(self.on_test_start)
        env.events.test_stop.add_listener(self.on_test_stop)

    def on_test_start(self, *args, **kwargs):
        self.log_telemetry(
            telemetry=TelemetryData(type="event", name="CUSTOM_START"),
            message="Custom telemetry recorder started"
        )

    def on_test_stop(self, *args, **kwargs):
        self.log_telemetry(
            telemetry=TelemetryData(type="event", name="CUSTOM_STOP"),
            message="Custom telemetry recorder stopped"
        )

import logging
from swarmtel_recorder import LocustArgumentParser
from swarmtel_recorder import Environment
from swarmtel_recorder import BaseTelemetryPlugin

from my_project.recorder import CustomTelemetryRecorder

logger = logging.getLogger(__name__)

class CustomTelemetryPlugin(BaseTelemetryPlugin):
    def add_arguments(self, parser: LocustArgumentParser) -> None:
        group = parser.add_argument_group(
            "telemetry.custom",
            "Environment variables for the custom telemetry plugin"
        )
        group.add_argument(
            "--custom-option",
            type=str,
            help="Example custom argument",
            env_var="LOCUST_CUSTOM_OPTION",
            default="default-value"
        )

    def load_master_telemetry_recorders(self, environment: Environment, **kwargs):
        CustomTelemetryRecorder(env=environment)

    def load_worker_telemetry_recorders(self, environment: Environment, **kwargs):
        CustomTelemetryRecorder(env=environment)

from swarmtel_recorder import register_plugin
from my_project.plugin import CustomTelemetryPlugin

register_plugin(plugin=CustomTelemetryPlugin())

//! Test guest: terminal escape sequences (clear screen, set the window title, move the
//! cursor, a C1 CSI) in every string it declares: version, description, option name and
//! help, recorder name, schema name. The host must never print them raw.

use swarmtel_guest::{
    EventKind, OptionSpec, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec,
    export_plugin,
};

/// The plugin.
pub struct TextEscape;

/// What every declared string carries.
pub const ESCAPES: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}\r\u{9b}31m\0";

impl Plugin for TextEscape {
    fn describe() -> PluginInfo {
        let text = |what: &str| format!("{what}{ESCAPES}");
        PluginInfo::new("text-escape", &text("1.0"), &text("description"))
            .option(OptionSpec::text(&text("option")).help(&text("help")))
            .recorder(RecorderSpec::new(&text("recorder")).events([EventKind::TestStart]))
            .schema(&text("SCHEMA"), serde_json::json!({ "type": "object" }))
    }

    fn create_recorder(_ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        Ok(Box::new(Idle))
    }
}

struct Idle;

impl Recorder for Idle {}

export_plugin!(TextEscape);

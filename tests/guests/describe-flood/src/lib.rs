//! Test guest: declares 100,000 recorders and 100,000 options, each with a 64-character
//! name. Before the host capped descriptions, this made it spawn a thread per recorder
//! instance (abort at 20,000) and spend over a minute loading.

use swarmtel_guest::{
    EventKind, OptionSpec, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec,
    export_plugin,
};

/// The plugin.
pub struct DescribeFlood;

/// Recorders and options it declares.
pub const COUNT: usize = 100_000;

impl Plugin for DescribeFlood {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new("describe-flood", "0.1.0", "Declares too much");
        for index in 0..COUNT {
            info = info
                .option(OptionSpec::integer(&format!("option-{index:057}")))
                .recorder(
                    RecorderSpec::new(&format!("recorder-{index:055}"))
                        .events([EventKind::Request]),
                );
        }
        info
    }

    fn create_recorder(_ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        Ok(Box::new(Idle))
    }
}

struct Idle;

impl Recorder for Idle {}

export_plugin!(DescribeFlood);

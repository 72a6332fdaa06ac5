//! Test guest: loops forever when asked to describe itself, so the host must give up at the
//! call's deadline and run on without it.

use swarmtel_guest::{Plugin, PluginInfo, Recorder, RecorderContext, export_plugin};

/// The plugin.
pub struct HangDescribe;

impl Plugin for HangDescribe {
    fn describe() -> PluginInfo {
        let mut spin = 0u64;
        loop {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
    }

    fn create_recorder(_ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        Err("never described".into())
    }
}

export_plugin!(HangDescribe);

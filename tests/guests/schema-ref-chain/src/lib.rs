//! Test guest: declares a schema whose `$ref`s form a chain 2,000 long (`a0` to `a1` to ...),
//! well under the byte caps. A chain 100,000 long used to overflow the host's stack while
//! compiling it.

use swarmtel_guest::{
    EventKind, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec, export_plugin,
};

/// The plugin.
pub struct SchemaRefChain;

/// Links in the chain.
pub const LINKS: usize = 2_000;

impl Plugin for SchemaRefChain {
    fn describe() -> PluginInfo {
        let mut defs = serde_json::Map::new();
        for index in 0..LINKS {
            defs.insert(
                format!("a{index}"),
                serde_json::json!({ "$ref": format!("#/$defs/a{}", index + 1) }),
            );
        }
        defs.insert(format!("a{LINKS}"), serde_json::json!({ "type": "object" }));
        PluginInfo::new("schema-ref-chain", "0.1.0", "A long $ref chain")
            .recorder(RecorderSpec::new("chain").events([EventKind::TestStart]))
            .schema(
                "CHAINED",
                serde_json::json!({ "$defs": defs, "$ref": "#/$defs/a0" }),
            )
    }

    fn create_recorder(_ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        Ok(Box::new(Idle))
    }
}

struct Idle;

impl Recorder for Idle {}

export_plugin!(SchemaRefChain);

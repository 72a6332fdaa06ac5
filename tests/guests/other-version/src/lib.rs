//! Test guest: exports `swarmtel:telemetry/plugin@0.9.0`, a version this runtime does not
//! speak, so the host must refuse it with a message naming both versions.

wit_bindgen::generate!({
    inline: r#"
        package swarmtel:telemetry@0.9.0;
        interface plugin {
            describe: func() -> string;
        }
        world future-plugin {
            export plugin;
        }
    "#,
});

#[allow(dead_code)]
struct Future;

impl exports::swarmtel::telemetry::plugin::Guest for Future {
    fn describe() -> String {
        "from the future".into()
    }
}

// The component ABI symbol names only link for wasm.
#[cfg(target_arch = "wasm32")]
export!(Future);

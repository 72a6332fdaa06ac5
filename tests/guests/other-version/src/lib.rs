//! Test guest: exports `swarmtel:telemetry/plugin@0.2.0`, a version this runtime does not
//! speak, so the host must refuse it with a message naming both versions.

wit_bindgen::generate!({
    inline: r#"
        package swarmtel:telemetry@0.2.0;
        interface plugin {
            describe: func() -> string;
        }
        world future-plugin {
            export plugin;
        }
    "#,
});

struct Future;

impl exports::swarmtel::telemetry::plugin::Guest for Future {
    fn describe() -> String {
        "from the future".into()
    }
}

export!(Future);

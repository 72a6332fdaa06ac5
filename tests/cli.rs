//! The `swarmtel` command's error paths and its `plugin inspect` and `check` commands, run as
//! a user would run them.

mod support;

use std::path::Path;
use std::process::Output;

use support::*;

fn run(args: &[&str], config: &Path) -> Output {
    swarmtel()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run swarmtel")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `swarmtel check` on a config with one plugin entry; returns the failed output.
fn check_fails_with(plugin_entry: &str) -> String {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        format!("[run]\ntestplan = \"t\"\n{plugin_entry}\n"),
    );
    for command in [&["check"][..], &["replay"][..]] {
        let output = run(command, &config);
        assert!(
            !output.status.success(),
            "{command:?} should fail for:\n{plugin_entry}"
        );
        assert_eq!(output.status.code(), Some(1));
    }
    stderr(&run(&["check"], &config))
}

#[test]
fn unknown_config_key_names_file_line_and_key() {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        "[run]\ntestplan = \"t\"\n\n[output]\npaht = \"out.jsonl\"\n",
    );
    let error = stderr(&run(&["check"], &config));
    assert!(error.contains("swarmtel.toml"), "{error}");
    assert!(error.contains("paht"), "{error}");
    assert!(error.contains("line 5"), "{error}");
}

#[test]
fn missing_config_is_named() {
    let workspace = Workspace::new();
    let output = run(&["check"], &workspace.path("nope.toml"));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("nope.toml"));
}

#[test]
fn missing_plugin_file_is_named() {
    let error = check_fails_with("[[plugins]]\npath = \"plugins/absent.wasm\"");
    assert!(error.contains("plugins/absent.wasm"), "{error}");
    assert!(error.contains("cannot read"), "{error}");
}

#[test]
fn a_core_module_is_not_a_plugin() {
    let workspace = Workspace::new();
    // The smallest valid core module: magic and version 1.
    let module = workspace.write("core.wasm", b"\0asm\x01\0\0\0");
    let error = check_fails_with(&format!("[[plugins]]\npath = {}", toml_path(&module)));
    assert!(
        error.contains("core WebAssembly module, not a component"),
        "{error}"
    );
    assert!(error.contains("core.wasm"), "{error}");
}

#[test]
fn a_truncated_component_does_not_compile() {
    let workspace = Workspace::new();
    let bytes = std::fs::read(guest("request_stats")).unwrap();
    let truncated = workspace.write("truncated.wasm", &bytes[..bytes.len() / 2]);
    let error = check_fails_with(&format!("[[plugins]]\npath = {}", toml_path(&truncated)));
    assert!(
        error.contains("truncated.wasm: does not compile"),
        "{error}"
    );
}

#[test]
fn random_bytes_are_not_webassembly() {
    let workspace = Workspace::new();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let random = workspace.write("random.wasm", noise);
    let error = check_fails_with(&format!("[[plugins]]\npath = {}", toml_path(&random)));
    assert!(
        error.contains("random.wasm: not a WebAssembly file"),
        "{error}"
    );
}

#[test]
fn a_component_for_another_wit_version_is_refused() {
    let error = check_fails_with(&format!(
        "[[plugins]]\npath = {}",
        toml_path(&guest("other_version"))
    ));
    assert!(
        error.contains("targets `swarmtel:telemetry/plugin@0.9.0`"),
        "{error}"
    );
    assert!(
        error.contains("speaks `swarmtel:telemetry/plugin@0.2.0` (and the older 0.1.0)"),
        "{error}"
    );
}

#[test]
fn an_unknown_option_is_named_with_the_declared_ones() {
    let error = check_fails_with(&format!(
        "[[plugins]]\npath = {}\n[plugins.options]\ncustom-optoin = \"x\"",
        toml_path(&guest("custom_telemetry"))
    ));
    assert!(error.contains("plugin custom-telemetry"), "{error}");
    assert!(error.contains("unknown option `custom-optoin`"), "{error}");
    assert!(error.contains("declares: custom-option"), "{error}");
}

#[test]
fn a_wrongly_typed_option_is_named() {
    let error = check_fails_with(&format!(
        "[[plugins]]\npath = {}\n[plugins.options]\ncount = \"three\"",
        toml_path(&guest("misbehave"))
    ));
    assert!(
        error.contains("option `count` from config: expected integer, got string"),
        "{error}"
    );
}

#[test]
fn a_role_the_plugin_does_not_serve_is_refused() {
    let error = check_fails_with(&format!(
        "[[plugins]]\npath = {}\nroles = [\"master\"]",
        toml_path(&guest("request_stats"))
    ));
    assert!(error.contains("plugin request-stats"), "{error}");
    assert!(
        error.contains("no recorder of this plugin serves `master`"),
        "{error}"
    );
}

#[test]
fn a_recorder_that_refuses_its_options_fails_at_start() {
    let error = check_fails_with(&format!(
        "[[plugins]]\npath = {}\n[plugins.options]\nmode = \"refuse\"",
        toml_path(&guest("misbehave"))
    ));
    assert!(error.contains("recorder `misbehaving_recorder`"), "{error}");
    assert!(error.contains("this recorder refuses to start"), "{error}");
}

// A plugin that cannot start under its `[plugins.limits]` is refused with the limit to
// raise and the value it needs: read off the component for memory and tables, and found by
// instantiating it for instances. Each value is then enough.
#[test]
fn limits_too_low_to_start_name_the_limit_and_the_value_it_needs() {
    let plugin = toml_path(&guest("custom_telemetry"));
    let cases = [
        (
            "memory_mib = 1",
            "memory_mib",
            "memory_mib = 2 or more (its linear memory starts at 17 pages of 64 KiB); the config allows 1",
        ),
        (
            "max_table_elements = 1",
            "max_table_elements",
            "max_table_elements = 109 or more (its largest table's initial size); the config allows 1",
        ),
        (
            "max_instances = 1",
            "max_instances",
            "max_instances = 3 or more (the core and component instances it is made of); the config allows 1",
        ),
    ];
    for (limit, key, words) in cases {
        let refused = check_fails_with(&format!(
            "[[plugins]]\npath = {plugin}\nrequired = true\n[plugins.limits]\n{limit}\n"
        ));
        assert!(
            refused.contains(&format!(
                "custom_telemetry.wasm: needs [plugins.limits] {words}"
            )),
            "{refused}"
        );
        let needed = words
            .split(" = ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let workspace = Workspace::new();
        let config = workspace.write(
            "swarmtel.toml",
            format!(
                "[run]\ntestplan = \"t\"\n[[plugins]]\npath = {plugin}\nrequired = true\n[plugins.limits]\n{key} = {needed}\n"
            ),
        );
        let output = run(&["check"], &config);
        assert!(
            output.status.success(),
            "{key} = {needed}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn the_same_plugin_twice_is_refused() {
    // The second copy costs only itself: check fails (a plugin cannot run), replay goes on
    // with the first.
    let workspace = Workspace::new();
    let path = toml_path(&guest("custom_telemetry"));
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\n[[plugins]]\npath = {path}\n[[plugins]]\npath = {path}\n"
        ),
    );
    let check = run(&["check"], &config);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        stderr(&check).contains("id already used"),
        "{}",
        stderr(&check)
    );
    let replay = swarmtel()
        .args(["replay", "--config"])
        .arg(&config)
        .arg("-")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(replay.status.code(), Some(0), "{}", stderr(&replay));
    let error = stderr(&replay);
    assert!(error.contains("id already used"), "{error}");
    assert!(error.contains("the run goes on without it"), "{error}");
}

/// `swarmtel check` on custom-telemetry with `plugin_toml` after its path, with
/// `LOCUST_CUSTOM_OPTION=from-env` in the environment; asserts success, returns stdout.
fn check_custom_telemetry_with_env(plugin_toml: &str) -> String {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\n[[plugins]]\npath = {}\n{plugin_toml}",
            toml_path(&guest("custom_telemetry"))
        ),
    );
    let output = swarmtel()
        .args(["check", "--config"])
        .arg(&config)
        .env("LOCUST_CUSTOM_OPTION", "from-env")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn check_lists_plugins_with_options_from_env_and_limits() {
    let text = check_custom_telemetry_with_env(
        "env_vars = [\"LOCUST_CUSTOM_OPTION\"]\n[plugins.limits]\nmemory_mib = 12\n",
    );
    assert!(text.contains("plugin custom-telemetry"), "{text}");
    assert!(text.contains("roles: master, worker"), "{text}");
    assert!(
        text.contains("option custom-option = \"from-env\""),
        "{text}"
    );
    assert!(
        text.contains(
            "env LOCUST_CUSTOM_OPTION for option custom-option: read (listed in env_vars)"
        ),
        "{text}"
    );
    assert!(text.contains("memory 12 MiB"), "{text}");
    assert!(text.contains("capabilities: none granted"), "{text}");
}

#[test]
fn an_option_env_var_is_read_only_when_the_config_lists_it() {
    let text = check_custom_telemetry_with_env("");
    assert!(!text.contains("from-env"), "{text}");
    assert!(
        text.contains(
            "env LOCUST_CUSTOM_OPTION for option custom-option: not read (not listed in env_vars)"
        ),
        "{text}"
    );
}

#[test]
fn a_config_can_never_list_a_secret_for_a_plugin() {
    for var in [
        "SWARMTEL_TOKEN",
        "LOCUST_SWARMTEL_TOKEN",
        "LOCUST_WEB_AUTH",
        "HOME",
    ] {
        let workspace = Workspace::new();
        let config = workspace.write(
            "swarmtel.toml",
            format!(
                "[run]\ntestplan = \"t\"\n[[plugins]]\npath = {}\nenv_vars = [\"LOCUST_X\", \"{var}\"]\n",
                toml_path(&guest("custom_telemetry"))
            ),
        );
        let output = swarmtel()
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{var}");
        let error = stderr(&output);
        assert!(error.contains("plugins[0].env_vars[1]"), "{var}: {error}");
        assert!(error.contains(var), "{var}: {error}");
    }
}

#[test]
fn an_option_env_var_of_the_wrong_type_is_named() {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\n[[plugins]]\npath = {}\nenv_vars = [\"SWARMTEL_REQUEST_STATS_PERIODIC\"]\n",
            toml_path(&guest("request_stats"))
        ),
    );
    let output = swarmtel()
        .args(["check", "--config"])
        .arg(&config)
        .env("SWARMTEL_REQUEST_STATS_PERIODIC", "sometimes")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let error = stderr(&output);
    assert!(
        error.contains(
            "option `periodic` from env SWARMTEL_REQUEST_STATS_PERIODIC: expected boolean"
        ),
        "{error}"
    );
}

#[test]
fn the_config_flag_has_an_env_var() {
    let workspace = Workspace::new();
    let config = workspace.write("swarmtel.toml", "[run]\ntestplan = \"t\"\n");
    let output = swarmtel()
        .arg("check")
        .env("SWARMTEL_CONFIG", &config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn plugin_inspect_prints_the_description() {
    let plugin = guest("request_stats");
    let output = swarmtel()
        .args(["plugin", "inspect"])
        .arg(&plugin)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "request-stats 0.1.0",
        "periodic  (boolean, default true, env SWARMTEL_REQUEST_STATS_PERIODIC (read only when a config lists it in env_vars))",
        "request_stats_recorder",
        "roles: worker, standalone",
        "events: request, test_stop, reset_stats, tick",
        "tick: every 5000 ms",
        "request_stats: {",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }

    let output = swarmtel()
        .args(["plugin", "inspect", "--json"])
        .arg(&plugin)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["id"], "request-stats");
    assert_eq!(json["options"][0]["name"], "periodic");
    assert_eq!(json["options"][0]["default"], true);
    assert_eq!(json["recorders"][0]["tick_interval_ms"], 5000);
    assert_eq!(json["schemas"][0]["schema"]["type"], "object");
}

#[test]
fn plugin_inspect_of_a_bad_file_fails_clearly() {
    let workspace = Workspace::new();
    let text = workspace.write("notes.wasm", "hello");
    let output = swarmtel()
        .args(["plugin", "inspect"])
        .arg(&text)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("notes.wasm: not a WebAssembly file"));
}

#[test]
fn ctrl_c_finishes_recorders_and_flushes_the_output() {
    use std::io::Write;
    use std::process::Stdio;

    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\n[[plugins]]\npath = {}\n",
            toml_path(&guest("request_stats"))
        ),
    );
    let mut child = swarmtel()
        .args(["replay", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Requests but no test stop: only `finish` can report them. stdin stays open, as a live
    // bridge's would.
    let stream = String::from_utf8(swarmtel::sources::synthetic::request_stream(1, 100)).unwrap();
    let without_stop: Vec<&str> = stream
        .lines()
        .filter(|line| !line.contains("test_stop"))
        .collect();
    stdin
        .write_all(format!("{}\n", without_stop.join("\n")).as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    // Give the process time to start and read what was sent; the assertion below does not
    // depend on how long that takes, only on the signal arriving after the data.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let stdout_lines = json_lines(&output.stdout);
    let totals: Vec<_> = from_plugin(&stdout_lines, "request-stats")
        .into_iter()
        .filter(|line| line["telemetry"]["endpoint"] == "Aggregated")
        .collect();
    assert_eq!(totals.len(), 1, "the final report was flushed");
    assert_eq!(totals[0]["telemetry"]["requests"], 100);
    let error = stderr(&output);
    assert!(error.contains("interrupted"), "{error}");
    assert!(error.contains("request-stats"), "{error}");
}

#[test]
fn a_plugin_cannot_read_arbitrary_environment_variables_through_its_options() {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\n[[plugins]]\npath = {}\n",
            toml_path(&guest("env_thief"))
        ),
    );
    let output = swarmtel()
        .args(["replay", "--config"])
        .arg(&config)
        .arg("-")
        .env("AWS_SECRET_ACCESS_KEY", "hunter2-secret")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    // Refused as the plugin's fault: the run goes on without it.
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let error = stderr(&output);
    assert!(error.contains("env-thief"), "{error}");
    assert!(
        error.contains("names env var `AWS_SECRET_ACCESS_KEY`"),
        "{error}"
    );
    assert!(error.contains("the run goes on without it"), "{error}");
    assert!(error.contains("LOCUST_* and SWARMTEL_*"), "{error}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("hunter2"));
    assert!(!error.contains("hunter2"));
}

#[test]
fn check_lists_the_outputs_with_their_filters_and_addresses() {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        "[run]\ntestplan = \"t\"\n\
         [[outputs]]\ntype = \"json_lines\"\npath = \"stats.ndjson\"\n\
         filter = { plugins = [\"request-stats\"], types = [\"metric\"] }\n\
         [[outputs]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:9999\"\nlinger_seconds = 15\n\
         [dead_letter]\npath = \"dead.ndjson\"\n",
    );
    let output = run(&["check"], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in [
        "  outputs[0]: json_lines stats.ndjson (filter: plugins [\"request-stats\"], names [], types [\"metric\"])",
        "  outputs[1]: prometheus http://127.0.0.1:9999/metrics (linger 15 s)",
        "  dead letter: dead.ndjson",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line}\n{stdout}");
    }
}

#[test]
fn a_run_that_fails_does_not_linger_on_its_metrics() {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        "[run]\ntestplan = \"t\"\n\
         [[outputs]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\nlinger_seconds = 60\n",
    );
    let started = std::time::Instant::now();
    let output = swarmtel()
        .args(["replay", "--config"])
        .arg(&config)
        .arg(workspace.path("no-such-events.ndjson"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("no-such-events.ndjson"));
    assert!(!stderr(&output).contains("serving the final metrics"));
    // Its only output shows counters: every item would be validated, then dropped.
    assert!(stderr(&output).contains("warning: no output takes telemetry"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
